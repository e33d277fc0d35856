//! Kernel struct member offsets from the kernel's BTF (`/sys/kernel/btf/vmlinux`), for the eBPF side, which
//! has no CO-RE: the loader sets them as a global ([`leakprobe_common::KernelOffsets`]). A kernel without BTF
//! or without one of a feature's members leaves that feature off (vma lookups, uretprobe return addresses).

use std::path::Path;

use btf_rs::{Backend, Btf, Type};
use leakprobe_common::KernelOffsets;

/// The running kernel's BTF.
pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

/// Why an offset is unknown.
#[derive(Debug, thiserror::Error)]
pub enum OffsetError {
    #[error("reading the kernel's BTF {path}: {message}")]
    Read { path: String, message: String },
    #[error("no struct `{0}` in the kernel's BTF")]
    NoStruct(String),
    #[error("no member `{1}` in struct `{0}` of the kernel's BTF")]
    NoMember(String, String),
}

/// A kernel's BTF, to look struct members up in.
pub struct KernelBtf {
    btf: Btf,
}

impl KernelBtf {
    /// Reads the BTF at `path` (the running kernel's: [`VMLINUX_BTF`]), memory-mapped and parsed on demand:
    /// the cached backend parses all of vmlinux's types at once (seconds on a loaded machine) for the dozen
    /// members looked up here.
    /// Sysfs maps `/sys/kernel/btf/vmlinux` only since Linux 6.16 (before, `mmap` fails with `ENODEV`): then
    /// it is read into an anonymous memory file, which maps.
    pub fn open(path: &Path) -> Result<Self, OffsetError> {
        match Btf::from_file_with_backend(path, Backend::Mmap) {
            Ok(btf) => Ok(Self { btf }),
            Err(mapping) => Self::open_copy(path).map_err(|err| OffsetError::Read {
                path: path.display().to_string(),
                message: format!("{mapping}; read into memory: {err}"),
            }),
        }
    }

    /// Reads the BTF at `path` into a memory file (`memfd_create`) and maps that.
    fn open_copy(path: &Path) -> Result<Self, String> {
        use std::os::fd::{AsRawFd as _, FromRawFd as _};
        let bytes = std::fs::read(path).map_err(|err| err.to_string())?;
        // SAFETY: a valid NUL-terminated name and flags; the descriptor returned is checked and owned below.
        let fd = unsafe { libc::memfd_create(c"leakprobe-btf".as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return Err(format!("memfd_create: {}", std::io::Error::last_os_error()));
        }
        // SAFETY: `fd` was just created and nothing else owns it.
        let mut file = unsafe { std::fs::File::from_raw_fd(fd) };
        std::io::Write::write_all(&mut file, &bytes).map_err(|err| err.to_string())?;
        // The mapping outlives the descriptor, closed when `file` drops.
        let btf = Btf::from_file_with_backend(format!("/proc/self/fd/{}", file.as_raw_fd()), Backend::Mmap)
            .map_err(|err| err.to_string())?;
        Ok(Self { btf })
    }

    /// Byte offset of `member` in `struct name`, also when it is inside an anonymous struct or union member.
    pub fn member_offset(&self, name: &str, member: &str) -> Result<u32, OffsetError> {
        let types = self.btf.resolve_types_by_name(name).unwrap_or_default();
        let found = types.iter().find_map(|ty| match ty {
            Type::Struct(s) => Some(self.find_member(s, member)),
            _ => None,
        });
        match found {
            None => Err(OffsetError::NoStruct(name.to_owned())),
            Some(None) => Err(OffsetError::NoMember(name.to_owned(), member.to_owned())),
            Some(Some(bits)) => Ok(bits / 8),
        }
    }

    /// Bit offset of `member` in `s`, searching anonymous members depth first. Bitfields are not members here.
    fn find_member(&self, s: &btf_rs::Struct, member: &str) -> Option<u32> {
        for m in &s.members {
            let name = self.btf.resolve_name(m).unwrap_or_default();
            if name == member {
                return (m.bit_offset().is_multiple_of(8) && m.bitfield_size().unwrap_or(0) == 0)
                    .then_some(m.bit_offset());
            }
            if name.is_empty()
                && let Ok(Type::Struct(inner) | Type::Union(inner)) = self.btf.resolve_chained_type(m)
                && let Some(bits) = self.find_member(&inner, member)
            {
                return Some(m.bit_offset() + bits);
            }
        }
        None
    }

    /// The offsets the kernel unwinder's vma lookup reads (`vma` 1), or why one is missing.
    pub fn vma_offsets(&self) -> Result<KernelOffsets, OffsetError> {
        let vma = |member| self.member_offset("vm_area_struct", member);
        Ok(KernelOffsets {
            vma: 1,
            vm_start: vma("vm_start")?,
            vm_end: vma("vm_end")?,
            vm_pgoff: vma("vm_pgoff")?,
            vm_file: vma("vm_file")?,
            f_inode: self.member_offset("file", "f_inode")?,
            i_ino: self.member_offset("inode", "i_ino")?,
            i_sb: self.member_offset("inode", "i_sb")?,
            s_dev: self.member_offset("super_block", "s_dev")?,
            ..KernelOffsets::NONE
        })
    }

    /// The offsets the walk reads to restore return addresses replaced by uretprobes (`uretprobe` 1), or why
    /// one is missing. The members keep their names from 6.1 to 6.18 (the structs around them changed).
    pub fn uretprobe_offsets(&self) -> Result<KernelOffsets, OffsetError> {
        let ri = |member| self.member_offset("return_instance", member);
        Ok(KernelOffsets {
            uretprobe: 1,
            task_utask: self.member_offset("task_struct", "utask")?,
            utask_return_instances: self.member_offset("uprobe_task", "return_instances")?,
            ri_stack: ri("stack")?,
            ri_orig_ret_vaddr: ri("orig_ret_vaddr")?,
            ri_next: ri("next")?,
            ..KernelOffsets::NONE
        })
    }
}

/// The running kernel's offsets for the kernel unwinder; a group whose members are not all found stays off
/// (said once, here).
pub fn running_kernel_offsets() -> KernelOffsets {
    let btf = match KernelBtf::open(Path::new(VMLINUX_BTF)) {
        Ok(btf) => btf,
        Err(err) => {
            log::warn!("kernel unwinder: no vma lookups, no uretprobe return addresses: {err}");
            return KernelOffsets::NONE;
        }
    };
    let vma = btf.vma_offsets().unwrap_or_else(|err| {
        log::warn!("kernel unwinder: no vma lookups (frames before a process's scan walk by frame pointers): {err}");
        KernelOffsets::NONE
    });
    let uretprobe = btf.uretprobe_offsets().unwrap_or_else(|err| {
        log::warn!("kernel unwinder: return addresses replaced by uretprobes stay unrestored: {err}");
        KernelOffsets::NONE
    });
    KernelOffsets {
        uretprobe: uretprobe.uretprobe,
        task_utask: uretprobe.task_utask,
        utask_return_instances: uretprobe.utask_return_instances,
        ri_stack: uretprobe.ri_stack,
        ri_orig_ret_vaddr: uretprobe.ri_orig_ret_vaddr,
        ri_next: uretprobe.ri_next,
        ..vma
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn running() -> KernelBtf {
        KernelBtf::open(Path::new(VMLINUX_BTF)).expect("this kernel has BTF")
    }

    #[test]
    fn running_kernel_has_every_offset() {
        let offsets = running().vma_offsets().expect("every member");
        assert_eq!(offsets.vma, 1);
        // vm_end follows vm_start (both `unsigned long`, in an anonymous struct since 6.12's union).
        assert_eq!(offsets.vm_end, offsets.vm_start + 8, "{offsets:?}");
        assert!(offsets.vm_pgoff > offsets.vm_end && offsets.vm_file > offsets.vm_end, "{offsets:?}");
        assert_ne!(offsets.i_ino, offsets.i_sb, "{offsets:?}");
    }

    #[test]
    fn running_kernel_has_the_uretprobe_offsets() {
        let offsets = running().uretprobe_offsets().expect("every member");
        assert_eq!(offsets.uretprobe, 1);
        // `stack` and `orig_ret_vaddr` are adjacent `unsigned long`s in every layout since 4.x.
        assert_eq!(offsets.ri_orig_ret_vaddr, offsets.ri_stack + 8, "{offsets:?}");
        assert!(offsets.ri_next > offsets.ri_orig_ret_vaddr, "{offsets:?}");
        assert!(offsets.task_utask > 0, "{offsets:?}");
        let both = running_kernel_offsets();
        assert_eq!((both.vma, both.uretprobe), (1, 1), "{both:?}");
    }

    #[test]
    fn members_inside_anonymous_unions_are_found() {
        let btf = running();
        // `struct page` keeps nearly every member inside anonymous unions of anonymous structs.
        let flags = btf.member_offset("page", "flags").expect("page.flags");
        assert_eq!(flags, 0);
        let mapping = btf.member_offset("page", "mapping").expect("page.mapping, in an anonymous struct");
        assert!(mapping > 0 && mapping.is_multiple_of(8));
        // `task_struct.pid` is a plain member far in.
        assert!(btf.member_offset("task_struct", "pid").expect("task_struct.pid") > 64);
    }

    #[test]
    fn a_copy_in_memory_reads_as_the_mapped_file() {
        // What kernels before 6.16 get, whose sysfs does not map the BTF.
        let copy = KernelBtf::open_copy(Path::new(VMLINUX_BTF)).expect("a copy in a memory file");
        let offsets = copy.vma_offsets().expect("every member");
        assert_eq!(offsets, running().vma_offsets().expect("every member"));
    }

    #[test]
    fn missing_structs_and_members_are_errors() {
        let btf = running();
        assert!(matches!(btf.member_offset("no_such_struct_here", "x"), Err(OffsetError::NoStruct(_))));
        assert!(matches!(btf.member_offset("vm_area_struct", "no_such_member"), Err(OffsetError::NoMember(..))));
        assert!(KernelBtf::open(Path::new("/nonexistent/btf")).is_err());
    }
}
