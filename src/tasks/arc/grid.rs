//! ARC grids: rectangular boards of colour cells, and their plain-text form.

use serde::{Deserialize, Serialize};
use std::fmt;

/// ARC boards are never larger than this on either side; augmentations that would exceed it are
/// skipped rather than producing grids no real task could contain.
pub const MAX_SIDE: usize = 30;
/// Colours are 0..=MAX_COLOUR, 0 being the black background.
pub const MAX_COLOUR: u8 = 9;

/// A validated ARC grid: 1..=30 rows, 1..=30 columns, every row the same length, cells 0..=9.
///
/// The invariants are enforced at every construction path (constructor, text parsing and serde),
/// so code holding a `Grid` never re-checks them.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "Vec<Vec<i64>>", into = "Vec<Vec<u8>>")]
pub struct Grid {
    rows: Vec<Vec<u8>>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GridError {
    #[error("the grid is empty (it needs at least one row and one column)")]
    Empty,
    #[error("the grid has {0} rows; at most {MAX_SIDE} are allowed")]
    TooManyRows(usize),
    #[error("the grid has {0} columns; at most {MAX_SIDE} are allowed")]
    TooManyColumns(usize),
    #[error("row {row} has {len} cells but row 1 has {expected}; grids must be rectangular")]
    Ragged {
        row: usize,
        len: usize,
        expected: usize,
    },
    #[error("row {row}, column {col}: cell value {value} is not a colour 0..={MAX_COLOUR}")]
    BadCell { row: usize, col: usize, value: i64 },
    #[error("line {line}, column {col}: {found:?} is not a digit 0-9")]
    BadChar {
        line: usize,
        col: usize,
        found: char,
    },
    #[error("line {line} is blank, inside the grid")]
    BlankLine { line: usize },
}

impl Grid {
    /// The grid as the log records it.
    pub fn view(&self) -> crate::record::Grid {
        crate::record::Grid(self.rows().to_vec())
    }

    /// Builds a grid from rows of colours, checking shape and colour range.
    pub fn new(rows: Vec<Vec<u8>>) -> Result<Grid, GridError> {
        check_shape(rows.len(), rows.iter().map(Vec::len))?;
        for (r, row) in rows.iter().enumerate() {
            if let Some(c) = row.iter().position(|&v| v > MAX_COLOUR) {
                return Err(GridError::BadCell {
                    row: r + 1,
                    col: c + 1,
                    value: i64::from(row[c]),
                });
            }
        }
        Ok(Grid { rows })
    }

    /// Builds a `height` x `width` grid whose cell (r, c) is `cell(r, c)`. Transforms use this so
    /// that a result over the size limit is an error, not an out-of-spec grid.
    pub fn from_fn(
        height: usize,
        width: usize,
        mut cell: impl FnMut(usize, usize) -> u8,
    ) -> Result<Grid, GridError> {
        check_shape(height, std::iter::repeat_n(width, height))?;
        let rows = (0..height)
            .map(|r| (0..width).map(|c| cell(r, c)).collect())
            .collect();
        Grid::new(rows)
    }

    pub fn height(&self) -> usize {
        self.rows.len()
    }

    pub fn width(&self) -> usize {
        self.rows[0].len()
    }

    /// The colour at (row, col), both 0-based. Panics out of range, like slice indexing: callers
    /// iterate within `height()` x `width()`.
    pub fn get(&self, row: usize, col: usize) -> u8 {
        self.rows[row][col]
    }

    pub fn rows(&self) -> &[Vec<u8>] {
        &self.rows
    }

    pub fn cells(&self) -> impl Iterator<Item = u8> + '_ {
        self.rows.iter().flatten().copied()
    }

    /// One row per line, one digit per cell, no separators, no trailing newline.
    pub fn to_text(&self) -> String {
        let mut out = String::with_capacity(self.height() * (self.width() + 1));
        for (i, row) in self.rows.iter().enumerate() {
            if i > 0 {
                out.push('\n');
            }
            out.extend(row.iter().map(|&v| char::from(b'0' + v)));
        }
        out
    }

    /// Parses the text form. Model output is untidy, so surrounding whitespace on each line and
    /// blank lines before and after the grid are ignored; anything else that is not a digit, a
    /// blank line inside the grid, or rows of unequal length is an error naming the line.
    pub fn parse_text(text: &str) -> Result<Grid, GridError> {
        let lines: Vec<(usize, &str)> = text
            .lines()
            .enumerate()
            .map(|(i, l)| (i + 1, l.trim()))
            .collect();
        let first = lines.iter().position(|(_, l)| !l.is_empty());
        let last = lines.iter().rposition(|(_, l)| !l.is_empty());
        let (Some(first), Some(last)) = (first, last) else {
            return Err(GridError::Empty);
        };
        let mut rows: Vec<Vec<u8>> = Vec::with_capacity(last - first + 1);
        for &(line, l) in &lines[first..=last] {
            if l.is_empty() {
                return Err(GridError::BlankLine { line });
            }
            let row = l
                .chars()
                .enumerate()
                .map(|(c, ch)| match ch.to_digit(10) {
                    Some(d) => Ok(d as u8),
                    None => Err(GridError::BadChar {
                        line,
                        col: c + 1,
                        found: ch,
                    }),
                })
                .collect::<Result<Vec<u8>, _>>()?;
            rows.push(row);
        }
        Grid::new(rows)
    }
}

fn check_shape(height: usize, mut widths: impl Iterator<Item = usize>) -> Result<(), GridError> {
    if height > MAX_SIDE {
        return Err(GridError::TooManyRows(height));
    }
    let Some(expected) = widths.next() else {
        return Err(GridError::Empty);
    };
    if expected == 0 {
        return Err(GridError::Empty);
    }
    if expected > MAX_SIDE {
        return Err(GridError::TooManyColumns(expected));
    }
    for (i, len) in widths.enumerate() {
        if len != expected {
            return Err(GridError::Ragged {
                row: i + 2,
                len,
                expected,
            });
        }
    }
    Ok(())
}

impl TryFrom<Vec<Vec<i64>>> for Grid {
    type Error = GridError;

    /// JSON cells arrive as arbitrary integers; checking them here (rather than letting serde fail
    /// on `u8`) gives an error naming the row, the column and the offending value.
    fn try_from(rows: Vec<Vec<i64>>) -> Result<Grid, GridError> {
        check_shape(rows.len(), rows.iter().map(Vec::len))?;
        let rows = rows
            .into_iter()
            .enumerate()
            .map(|(r, row)| {
                row.into_iter()
                    .enumerate()
                    .map(|(c, v)| match u8::try_from(v) {
                        Ok(v) if v <= MAX_COLOUR => Ok(v),
                        _ => Err(GridError::BadCell {
                            row: r + 1,
                            col: c + 1,
                            value: v,
                        }),
                    })
                    .collect()
            })
            .collect::<Result<Vec<Vec<u8>>, _>>()?;
        Ok(Grid { rows })
    }
}

impl From<Grid> for Vec<Vec<u8>> {
    fn from(grid: Grid) -> Vec<Vec<u8>> {
        grid.rows
    }
}

impl fmt::Display for Grid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_text())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Random valid grids up to `max_side` on each side, shared with the other modules' tests.
    pub(crate) fn arb_grid(max_side: usize) -> impl Strategy<Value = Grid> {
        (1..=max_side, 1..=max_side).prop_flat_map(|(h, w)| {
            proptest::collection::vec(proptest::collection::vec(0..=MAX_COLOUR, w), h)
                .prop_map(|rows| Grid::new(rows).expect("strategy builds valid grids"))
        })
    }

    fn g(text: &str) -> Grid {
        Grid::parse_text(text).unwrap()
    }

    #[test]
    fn new_validates_shape_and_colours() {
        assert_eq!(Grid::new(vec![]), Err(GridError::Empty));
        assert_eq!(Grid::new(vec![vec![]]), Err(GridError::Empty));
        assert_eq!(
            Grid::new(vec![vec![1, 2], vec![3]]),
            Err(GridError::Ragged {
                row: 2,
                len: 1,
                expected: 2
            })
        );
        assert_eq!(
            Grid::new(vec![vec![1, 10]]),
            Err(GridError::BadCell {
                row: 1,
                col: 2,
                value: 10
            })
        );
        assert_eq!(
            Grid::new(vec![vec![0; 31]]),
            Err(GridError::TooManyColumns(31))
        );
        assert_eq!(
            Grid::new(vec![vec![0]; 31]),
            Err(GridError::TooManyRows(31))
        );
        let max = Grid::new(vec![vec![9; 30]; 30]).unwrap();
        assert_eq!((max.height(), max.width()), (30, 30));
    }

    #[test]
    fn text_form_is_digits_one_row_per_line() {
        let grid = Grid::new(vec![vec![0, 1, 2], vec![7, 8, 9]]).unwrap();
        assert_eq!(grid.to_text(), "012\n789");
        assert_eq!(grid.to_string(), "012\n789");
    }

    #[test]
    fn parse_tolerates_surrounding_whitespace_and_blank_edges() {
        let expected = Grid::new(vec![vec![0, 1], vec![2, 3]]).unwrap();
        assert_eq!(g("01\n23"), expected);
        assert_eq!(g("\n\n  01  \r\n\t23\n\n\n"), expected);
        assert_eq!(g("01\r\n23\r\n"), expected);
    }

    #[test]
    fn parse_rejects_bad_input_with_located_errors() {
        assert_eq!(Grid::parse_text(""), Err(GridError::Empty));
        assert_eq!(Grid::parse_text(" \n\n "), Err(GridError::Empty));
        assert_eq!(
            Grid::parse_text("012\n01"),
            Err(GridError::Ragged {
                row: 2,
                len: 2,
                expected: 3
            })
        );
        assert_eq!(
            Grid::parse_text("\n012\n0x2"),
            Err(GridError::BadChar {
                line: 3,
                col: 2,
                found: 'x'
            })
        );
        assert_eq!(
            Grid::parse_text("0 1"),
            Err(GridError::BadChar {
                line: 1,
                col: 2,
                found: ' '
            })
        );
        assert_eq!(
            Grid::parse_text("01\n\n01"),
            Err(GridError::BlankLine { line: 2 })
        );
        let msg = Grid::parse_text("012\n01").unwrap_err().to_string();
        assert!(
            msg.contains("row 2") && msg.contains("rectangular"),
            "{msg}"
        );
    }

    #[test]
    fn serde_uses_nested_arrays_and_validates() {
        let grid: Grid = serde_json::from_str("[[1,2],[3,4]]").unwrap();
        assert_eq!(grid, g("12\n34"));
        assert_eq!(serde_json::to_string(&grid).unwrap(), "[[1,2],[3,4]]");
        let err = serde_json::from_str::<Grid>("[[1,2],[3,-4]]").unwrap_err();
        assert!(err.to_string().contains("cell value -4"), "{err}");
        let err = serde_json::from_str::<Grid>("[[1,2],[3]]").unwrap_err();
        assert!(err.to_string().contains("rectangular"), "{err}");
        let err = serde_json::from_str::<Grid>("[[1,2],[3,400]]").unwrap_err();
        assert!(err.to_string().contains("400"), "{err}");
    }

    #[test]
    fn from_fn_refuses_oversized_results() {
        assert_eq!(
            Grid::from_fn(31, 2, |_, _| 0),
            Err(GridError::TooManyRows(31))
        );
        assert_eq!(
            Grid::from_fn(2, 31, |_, _| 0),
            Err(GridError::TooManyColumns(31))
        );
        assert_eq!(Grid::from_fn(0, 3, |_, _| 0), Err(GridError::Empty));
        assert_eq!(
            Grid::from_fn(2, 2, |r, c| (r * 2 + c) as u8).unwrap(),
            g("01\n23")
        );
    }

    proptest! {
        #[test]
        fn text_round_trip(grid in arb_grid(MAX_SIDE)) {
            prop_assert_eq!(Grid::parse_text(&grid.to_text()).unwrap(), grid.clone());
            let json = serde_json::to_string(&grid).unwrap();
            prop_assert_eq!(serde_json::from_str::<Grid>(&json).unwrap(), grid);
        }
    }
}
