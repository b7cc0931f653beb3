fn main() {
    println!("seal-tui {}", env!("CARGO_PKG_VERSION"));
}
