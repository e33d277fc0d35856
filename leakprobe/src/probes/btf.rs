//! Kernel struct member offsets from the kernel's BTF (`/sys/kernel/btf/vmlinux`), for the eBPF side, which
//! has no CO-RE: the loader sets them as a global ([`leakprobe_common::KernelOffsets`]). A kernel without BTF
//! or without one of the members leaves the feature that needs them off.

use std::path::Path;

use btf_rs::{Btf, Type};
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
    /// Reads the BTF at `path` (the running kernel's: [`VMLINUX_BTF`]).
    pub fn open(path: &Path) -> Result<Self, OffsetError> {
        let btf = Btf::from_file(path)
            .map_err(|err| OffsetError::Read { path: path.display().to_string(), message: err.to_string() })?;
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
    pub fn kernel_offsets(&self) -> Result<KernelOffsets, OffsetError> {
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
            pad: 0,
        })
    }
}

/// The running kernel's offsets for the kernel unwinder, or [`KernelOffsets::NONE`] (said once, here).
pub fn running_kernel_offsets() -> KernelOffsets {
    match KernelBtf::open(Path::new(VMLINUX_BTF)).and_then(|btf| btf.kernel_offsets()) {
        Ok(offsets) => offsets,
        Err(err) => {
            log::warn!(
                "kernel unwinder: no vma lookups (frames before a process's scan walk by frame pointers): {err}"
            );
            KernelOffsets::NONE
        }
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
        let offsets = running().kernel_offsets().expect("every member");
        assert_eq!(offsets.vma, 1);
        // vm_end follows vm_start (both `unsigned long`, in an anonymous struct since 6.12's union).
        assert_eq!(offsets.vm_end, offsets.vm_start + 8, "{offsets:?}");
        assert!(offsets.vm_pgoff > offsets.vm_end && offsets.vm_file > offsets.vm_end, "{offsets:?}");
        assert_ne!(offsets.i_ino, offsets.i_sb, "{offsets:?}");
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
    fn missing_structs_and_members_are_errors() {
        let btf = running();
        assert!(matches!(btf.member_offset("no_such_struct_here", "x"), Err(OffsetError::NoStruct(_))));
        assert!(matches!(btf.member_offset("vm_area_struct", "no_such_member"), Err(OffsetError::NoMember(..))));
        assert!(KernelBtf::open(Path::new("/nonexistent/btf")).is_err());
    }
}
