//! Reads of another process's memory (`process_vm_readv`): never trusted, never more than asked.

/// Exactly `len` bytes of process `pid`'s memory at `addr`; `None` if any of them cannot be read.
pub fn read(pid: u32, addr: u64, len: usize) -> Option<Vec<u8>> {
    let remote_addr = usize::try_from(addr).ok()?;
    let pid = libc::pid_t::try_from(pid).ok()?;
    let mut buf = vec![0u8; len];
    let local = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: len };
    let remote = libc::iovec { iov_base: remote_addr as *mut libc::c_void, iov_len: len };
    // SAFETY: `local` covers `buf`, which outlives the call; `remote` only names addresses in the other process.
    let read = unsafe { libc::process_vm_readv(pid, &raw const local, 1, &raw const remote, 1, 0) };
    (usize::try_from(read).ok()? == len).then_some(buf)
}

/// The little-endian `u64` at `offset` in `bytes`, if it fits.
pub fn u64_at(bytes: &[u8], offset: u64) -> Option<u64> {
    let start = usize::try_from(offset).ok()?;
    let raw: [u8; 8] = bytes.get(start..start.checked_add(8)?)?.try_into().ok()?;
    Some(u64::from_le_bytes(raw))
}
