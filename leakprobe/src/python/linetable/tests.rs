//! Line tables of a real function (`gen.py` below) as compiled by Python 3.10.13, 3.11.7, 3.12.1 and 3.13.0,
//! with the line of every code unit as the interpreter itself reports it (`co_positions`; 3.10 `co_lines`).
//!
//! ```python
//! def sample(items, limit):      # line 2
//!     total = 0
//!     for item in items:
//!         if item > limit:
//!             total += (item
//!                       * 2)
//!         else:
//!             total -= 1
//!     return total
//! ```

use super::*;

const TABLE_3_10: &[u8] = &[4, 1, 8, 1, 8, 1, 4, 1, 2, 1, 8, 255, 10, 3, 4, 1];
const FIRST_3_10: i64 = 2;
const LINES_3_10: &[Option<i64>] = &[
    Some(3),
    Some(3),
    Some(4),
    Some(4),
    Some(4),
    Some(4),
    Some(5),
    Some(5),
    Some(5),
    Some(5),
    Some(6),
    Some(6),
    Some(7),
    Some(6),
    Some(6),
    Some(6),
    Some(6),
    Some(9),
    Some(9),
    Some(9),
    Some(9),
    Some(9),
    Some(10),
    Some(10),
];
const TABLE_3_11: &[u8] = &[
    128, 0, 216, 12, 13, 128, 69, 216, 16, 21, 240, 0, 5, 5, 23, 240, 0, 5, 5, 23, 136, 4, 216, 11, 15, 144, 37, 138,
    60, 136, 60, 216, 12, 17, 144, 100, 216, 24, 25, 241, 3, 1, 23, 26, 241, 0, 1, 13, 27, 136, 69, 136, 69, 240, 6, 0,
    13, 18, 144, 81, 137, 74, 136, 69, 136, 69, 216, 11, 16, 128, 76,
];
const FIRST_3_11: i64 = 2;
const LINES_3_11: &[Option<i64>] = &[
    Some(2),
    Some(3),
    Some(3),
    Some(4),
    Some(4),
    Some(4),
    Some(4),
    Some(5),
    Some(5),
    Some(5),
    Some(5),
    Some(5),
    Some(5),
    Some(6),
    Some(6),
    Some(7),
    Some(6),
    Some(6),
    Some(6),
    Some(6),
    Some(6),
    Some(6),
    Some(9),
    Some(9),
    Some(9),
    Some(9),
    Some(9),
    Some(9),
    Some(10),
    Some(10),
];
const TABLE_3_12: &[u8] = &[
    128, 0, 216, 12, 13, 128, 69, 216, 16, 21, 242, 0, 5, 5, 23, 136, 4, 216, 11, 15, 144, 37, 138, 60, 216, 12, 17,
    144, 100, 216, 24, 25, 241, 3, 1, 23, 26, 241, 0, 1, 13, 27, 137, 69, 240, 6, 0, 13, 18, 144, 81, 137, 74, 137, 69,
    240, 11, 5, 5, 23, 240, 12, 0, 12, 17, 128, 76,
];
const FIRST_3_12: i64 = 2;
const LINES_3_12: &[Option<i64>] = &[
    Some(2),
    Some(3),
    Some(3),
    Some(4),
    Some(4),
    Some(4),
    Some(4),
    Some(4),
    Some(5),
    Some(5),
    Some(5),
    Some(5),
    Some(5),
    Some(6),
    Some(6),
    Some(7),
    Some(6),
    Some(6),
    Some(6),
    Some(6),
    Some(6),
    Some(6),
    Some(9),
    Some(9),
    Some(9),
    Some(9),
    Some(9),
    Some(9),
    Some(4),
    Some(10),
    Some(10),
];
const TABLE_3_13: &[u8] = &[
    128, 0, 216, 12, 13, 128, 69, 219, 16, 21, 136, 4, 216, 11, 15, 139, 60, 216, 12, 17, 216, 24, 25, 241, 3, 1, 23,
    26, 241, 0, 1, 13, 27, 138, 69, 240, 6, 0, 13, 18, 144, 81, 137, 74, 138, 69, 241, 11, 0, 17, 22, 240, 12, 0, 12,
    17, 128, 76,
];
const FIRST_3_13: i64 = 2;
const LINES_3_13: &[Option<i64>] = &[
    Some(2),
    Some(3),
    Some(3),
    Some(4),
    Some(4),
    Some(4),
    Some(4),
    Some(4),
    Some(5),
    Some(5),
    Some(5),
    Some(5),
    Some(5),
    Some(6),
    Some(7),
    Some(6),
    Some(6),
    Some(6),
    Some(6),
    Some(6),
    Some(6),
    Some(6),
    Some(9),
    Some(9),
    Some(9),
    Some(9),
    Some(9),
    Some(9),
    Some(9),
    Some(4),
    Some(4),
    Some(10),
    Some(10),
];

#[test]
fn locations_match_the_interpreters() {
    for (table, first, lines) in [
        (TABLE_3_11, FIRST_3_11, LINES_3_11),
        (TABLE_3_12, FIRST_3_12, LINES_3_12),
        (TABLE_3_13, FIRST_3_13, LINES_3_13),
    ] {
        for (index, &line) in lines.iter().enumerate() {
            assert_eq!(line_of_locations(table, first, index as u64), line, "code unit {index}");
        }
    }
}

#[test]
fn pairs_match_the_interpreter() {
    for (index, &line) in LINES_3_10.iter().enumerate() {
        assert_eq!(line_of_pairs(TABLE_3_10, FIRST_3_10, 2 * index as u64), line, "code unit {index}");
    }
}

#[test]
fn malformed_tables_give_no_line() {
    assert_eq!(line_of_locations(&[0x00, 0x01], 1, 0), None);
    // A long-form entry cut in its varints.
    assert_eq!(line_of_locations(&[0x80 | (14 << 3), 0x7f], 1, 0), None);
    assert_eq!(line_of_locations(&[], 1, 0), None);
    assert_eq!(line_of_pairs(&[4], 1, 0), None);
}
