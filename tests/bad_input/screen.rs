//! Broken themes and key maps, and screen flags given where no screen opens. A theme or key
//! map is read before a terminal is needed, so these are refused even without one (as here).

use super::fixtures::{example, gguf, s};
use super::lab::{case, Case, Lab};

/// `replay` (which opens the screen) on the example session with `flags`; it must fail
/// naming each phrase, before it asks for a terminal.
fn screen_refused(lab: &Lab, flags: &[&str], phrases: &[&str]) {
    let dir = example(lab);
    let mut args = vec!["replay", "--speed", "0"];
    let dir = s(&dir);
    args.push(&dir);
    args.extend_from_slice(flags);
    lab.run(&args)
        .fails(phrases)
        .never_says(&["needs a terminal"]);
}

fn theme(lab: &Lab, text: &str) -> String {
    s(&lab.write("my-theme.toml", text))
}

fn keys(lab: &Lab, text: &str) -> String {
    s(&lab.write("my-keys.toml", text))
}

pub fn cases() -> Vec<Case> {
    vec![
        case("a theme name that does not exist", |lab| {
            screen_refused(
                lab,
                &["--theme", "sparkly"],
                &["no theme named", "sparkly", "built in"],
            );
        }),
        case("a theme path that does not exist", |lab| {
            let p = s(&lab.path("themes/gone.toml"));
            screen_refused(lab, &["--theme", &p], &["gone.toml", "does not exist"]);
        }),
        case("a theme file that is not TOML", |lab| {
            let p = theme(lab, "fg = \n");
            screen_refused(
                lab,
                &["--theme", &p],
                &["my-theme.toml", "not a valid theme file"],
            );
        }),
        case("a theme with a colour that is no colour", |lab| {
            let p = theme(lab, "fg = \"#zzzzzz\"\n");
            screen_refused(lab, &["--theme", &p], &["my-theme.toml", "fg", "#zzzzzz"]);
        }),
        case("a theme with a colour index past 255", |lab| {
            let p = theme(lab, "accent = 300\n");
            screen_refused(lab, &["--theme", &p], &["my-theme.toml", "accent"]);
        }),
        case("a theme with an unknown key", |lab| {
            let p = theme(lab, "sparkle = \"#ffffff\"\n");
            screen_refused(
                lab,
                &["--theme", &p],
                &["my-theme.toml", "unknown key `sparkle`"],
            );
        }),
        case("a theme whose ARC palette is not ten colours", |lab| {
            let p = theme(lab, "arc = [\"#000000\"]\n");
            screen_refused(lab, &["--theme", &p], &["my-theme.toml", "exactly 10"]);
        }),
        case("a bad theme file is refused under NO_COLOR too", |lab| {
            let p = theme(lab, "fg = \"#zzzzzz\"\n");
            let dir = s(&example(lab));
            lab.cmd(&["replay", &dir, "--theme", &p])
                .env("NO_COLOR", "1")
                .go()
                .fails(&["my-theme.toml", "#zzzzzz"]);
        }),
        case("a key map with an unknown action", |lab| {
            let p = keys(lab, "[keys]\n\"w\" = \"explode\"\n");
            screen_refused(
                lab,
                &["--keys", &p],
                &["my-keys.toml", "\"w\"", "unknown action \"explode\""],
            );
        }),
        case("a key map with an unknown key name", |lab| {
            let p = keys(lab, "[keys]\n\"hyperspace\" = \"approve\"\n");
            screen_refused(lab, &["--keys", &p], &["my-keys.toml", "hyperspace"]);
        }),
        case("a key map that is not TOML", |lab| {
            let p = keys(lab, "[keys\n");
            screen_refused(lab, &["--keys", &p], &["my-keys.toml", "not a keymap"]);
        }),
        case("a key map without a [keys] table", |lab| {
            let p = keys(lab, "approve = \"w\"\n");
            screen_refused(lab, &["--keys", &p], &["my-keys.toml", "[keys]"]);
        }),
        case("a key map file that does not exist", |lab| {
            let p = s(&lab.path("none-keys.toml"));
            screen_refused(
                lab,
                &["--keys", &p],
                &["cannot read keymap", "none-keys.toml"],
            );
        }),
        case("--keys given to a command without a screen", |lab| {
            let p = keys(lab, "[keys]\n\"w\" = \"approve\"\n");
            let dir = s(&example(lab));
            lab.run(&["report", &dir, "--keys", &p])
                .fails(&["--keys", "only applies to the workbench"]);
            assert!(!lab.sessions().join("example/report").exists());
        }),
        case("--theme given to a command without a screen", |lab| {
            lab.run(&["sample", "-m", &s(&gguf()), "-p", "hi", "--theme", "light"])
                .fails(&["--theme", "only applies to the workbench"]);
        }),
        case("--keys given to a headless run", |lab| {
            let p = keys(lab, "[keys]\n\"w\" = \"approve\"\n");
            lab.run(&["run", "--headless", "--keys", &p])
                .fails(&["--keys", "only applies to the workbench"]);
            assert!(lab.session_dirs().is_empty());
        }),
        case("the workbench without a terminal", |lab| {
            let dir = s(&example(lab));
            lab.run(&["replay", &dir])
                .fails(&["needs a terminal", "--headless"]);
        }),
    ]
}
