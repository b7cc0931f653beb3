//! Knowledge incorporation (SQuAD-style passages).
