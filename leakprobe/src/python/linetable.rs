//! Line numbers from a code object's line table, for a bytecode offset.
//!
//! 3.11+ (`Objects/locations.md`): entries of one header byte `1 cccc lll` (code, length - 1 in code units)
//! and code-specific varints; 3.10 (`Objects/lnotab_notes.txt`): (bytecode delta, signed line delta) pairs,
//! a line delta of -128 meaning "no line". Malformed tables end the search (no line), never panic.

/// The line of the instruction at code unit `index` (2-byte units) in a 3.11+ location table.
pub fn line_of_locations(table: &[u8], firstlineno: i64, index: u64) -> Option<i64> {
    let mut bytes = table.iter().copied();
    let mut line = firstlineno;
    let mut start = 0u64;
    while let Some(head) = bytes.next() {
        if head & 0x80 == 0 {
            return None;
        }
        let code = (head >> 3) & 0x0f;
        let length = u64::from(head & 0x07) + 1;
        let has_line = match code {
            15 => false,
            14 => {
                line += signed_varint(&mut bytes)?;
                // End line, column, end column.
                for _ in 0..3 {
                    varint(&mut bytes)?;
                }
                true
            }
            13 => {
                line += signed_varint(&mut bytes)?;
                true
            }
            10..=12 => {
                line += i64::from(code - 10);
                bytes.next()?;
                bytes.next()?;
                true
            }
            _ => {
                bytes.next()?;
                true
            }
        };
        let end = start + length;
        if (start..end).contains(&index) {
            return has_line.then_some(line);
        }
        start = end;
    }
    None
}

fn varint(bytes: &mut impl Iterator<Item = u8>) -> Option<u64> {
    let mut value = 0u64;
    let mut shift = 0;
    loop {
        let byte = bytes.next()?;
        value |= u64::from(byte & 0x3f).checked_shl(shift)?;
        if byte & 0x40 == 0 {
            return Some(value);
        }
        shift += 6;
        if shift > 60 {
            return None;
        }
    }
}

#[expect(clippy::cast_possible_wrap, reason = "the value is at most 2^63 after the shift")]
fn signed_varint(bytes: &mut impl Iterator<Item = u8>) -> Option<i64> {
    let value = varint(bytes)?;
    let magnitude = (value >> 1) as i64;
    Some(if value & 1 != 0 { -magnitude } else { magnitude })
}

/// The line of the instruction at byte offset `offset` in a 3.10 line table.
pub fn line_of_pairs(table: &[u8], firstlineno: i64, offset: u64) -> Option<i64> {
    let mut line = firstlineno;
    let mut end = 0u64;
    for pair in table.chunks_exact(2) {
        let (sdelta, ldelta) = (u64::from(pair[0]), i8::from_ne_bytes([pair[1]]));
        if ldelta == 0 {
            end += sdelta;
            continue;
        }
        let start = end;
        end = start + sdelta;
        if ldelta == -128 {
            if (start..end).contains(&offset) {
                return None;
            }
            continue;
        }
        line += i64::from(ldelta);
        if (start..end).contains(&offset) {
            return Some(line);
        }
    }
    None
}

#[cfg(test)]
mod tests;
