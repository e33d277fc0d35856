//! Layout of the `oom/mark_victim` record, from the tracepoint's format file.

use leakprobe_common::{NO_FIELD, OomFields};

use super::preflight::{Field, field};

/// The offsets the program reads, or `None` when the record has no usable `pid` (then OOM reports are off).
/// A field that is missing, or whose size or kind is not the expected one, is left out ([`NO_FIELD`]): the
/// report then says it is unknown rather than reading the wrong bytes.
pub fn fields(format: &str) -> Option<OomFields> {
    let pick = |name: &str, size: u32, data_loc: bool| match field(format, name) {
        Some(f @ Field { size: s, data_loc: d, .. }) if s == size && d == data_loc => f.offset,
        Some(f) => {
            log::warn!("oom/mark_victim field `{name}` is {f:?}, expected {size} bytes: not read");
            NO_FIELD
        }
        None => NO_FIELD,
    };
    let pid = pick("pid", 4, false);
    if pid == NO_FIELD {
        return None;
    }
    Some(OomFields {
        pid,
        comm: pick("comm", 4, true),
        total_vm: pick("total_vm", 8, false),
        anon_rss: pick("anon_rss", 8, false),
        file_rss: pick("file_rss", 8, false),
        shmem_rss: pick("shmem_rss", 8, false),
        uid: pick("uid", 4, false),
        oom_score_adj: pick("oom_score_adj", 2, false),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probes::preflight::tests::MARK_VICTIM_FORMAT;

    #[test]
    fn this_machines_layout() {
        let want = OomFields {
            pid: 8,
            comm: 12,
            total_vm: 16,
            anon_rss: 24,
            file_rss: 32,
            shmem_rss: 40,
            uid: 48,
            oom_score_adj: 64,
        };
        assert_eq!(fields(MARK_VICTIM_FORMAT), Some(want));
    }

    #[test]
    fn old_kernels_have_only_the_pid() {
        let old = "name: mark_victim\nformat:\n\tfield:int pid;\toffset:8;\tsize:4;\tsigned:1;\n";
        assert_eq!(fields(old), Some(OomFields { pid: 8, ..OomFields::NONE }));
        assert_eq!(fields("name: mark_victim\nformat:\n"), None);
        // A field of an unexpected size is not read.
        let odd = "\tfield:int pid;\toffset:8;\tsize:4;\n\tfield:unsigned int total_vm;\toffset:16;\tsize:4;\n";
        assert_eq!(fields(odd), Some(OomFields { pid: 8, ..OomFields::NONE }));
    }
}
