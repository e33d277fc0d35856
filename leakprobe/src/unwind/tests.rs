use std::hint::black_box;

use blazesym::symbolize::{
    Input, Symbolizer,
    source::{Process, Source},
};

use super::*;

#[inline(never)]
fn unwind_test_inner() -> (UserStack, Vec<u8>) {
    black_box(own::capture(16 << 10))
}

#[inline(never)]
fn unwind_test_middle() -> (UserStack, Vec<u8>) {
    black_box(unwind_test_inner())
}

#[inline(never)]
fn unwind_test_outer() -> (UserStack, Vec<u8>) {
    black_box(unwind_test_middle())
}

fn names(addrs: &[u64]) -> Vec<String> {
    let symbolizer = Symbolizer::new();
    let source = Source::Process(Process::new(blazesym::Pid::Slf));
    // Return addresses: look up the call instruction (addr - 1), except the first (an instruction address).
    let lookups: Vec<u64> = addrs.iter().enumerate().map(|(i, &a)| if i == 0 { a } else { a - 1 }).collect();
    symbolizer
        .symbolize(&source, Input::AbsAddr(&lookups))
        .expect("symbolize own addresses")
        .into_iter()
        .map(|s| s.as_sym().map(|sym| sym.name.to_string()).unwrap_or_default())
        .collect()
}

#[test]
fn unwinds_own_frameless_stack_in_order() {
    let stats = Arc::new(UnwindStats::default());
    let mut unwinder = Unwinder::new(UnwindLimits::default(), stats.clone());
    let (regs, stack) = unwind_test_outer();
    let mut frames = [0u64; MAX_FRAMES];
    let (n, outcome) = unwinder.unwind(std::process::id(), &regs, &stack, &mut frames);
    let names = names(&frames[..n as usize]);
    let position = |needle: &str| names.iter().position(|n| n.contains(needle));
    let (inner, middle, outer) =
        (position("unwind_test_inner"), position("unwind_test_middle"), position("unwind_test_outer"));
    assert_eq!(inner, Some(0), "{names:#?}");
    assert_eq!(middle, Some(1), "{names:#?}");
    assert_eq!(outer, Some(2), "{names:#?}");
    assert!(names.iter().any(|n| n.contains("unwinds_own_frameless_stack_in_order")), "{names:#?}");
    assert_ne!(outcome, Outcome::Incomplete, "{names:#?}");
    assert_eq!(stats.dwarf.load(Ordering::Relaxed), 1);
    assert!(stats.binaries_loaded.load(Ordering::Relaxed) > 0);

    // A second stack of the same process reuses the modules and tables: no new maps read.
    let reads = stats.maps_reads.load(Ordering::Relaxed);
    let mut again = [0u64; MAX_FRAMES];
    let (n2, _) = unwinder.unwind(std::process::id(), &regs, &stack, &mut again);
    assert_eq!((n2, &again[..n2 as usize]), (n, &frames[..n as usize]));
    assert_eq!(stats.maps_reads.load(Ordering::Relaxed), reads);
}

#[test]
fn a_short_copy_truncates_and_a_gone_process_keeps_the_caller() {
    let mut unwinder = Unwinder::new(UnwindLimits::default(), Arc::default());
    let (regs, stack) = unwind_test_outer();
    let mut frames = [0u64; MAX_FRAMES];
    // 64 bytes cannot hold three frames of this test's callers.
    let (n, outcome) = unwinder.unwind(std::process::id(), &regs, &stack[..64], &mut frames);
    assert_eq!(outcome, Outcome::Truncated, "{:x?}", &frames[..n as usize]);
    assert!(n >= 1);
    // No such process: the stack is its first frame, counted as incomplete.
    let (n, outcome) = unwinder.unwind(u32::MAX - 1, &regs, &stack, &mut frames);
    assert_eq!((n, outcome, frames[0]), (1, Outcome::Incomplete, regs.ip));
}

#[test]
fn base_address_of_own_executable() {
    let maps = maps::read_parsed(std::process::id()).expect("own maps");
    let exe = std::env::current_exe().expect("own exe");
    let text = maps.iter().find(|m| m.executable && *m.path == *exe).expect("own executable mapping");
    let tables = BinaryTables::read(std::process::id(), text).expect("own tables");
    assert!(tables.bytes > 0);
    let base = tables.base_avma(text.start, text.file_offset).expect("base");
    // The dynamic loader's own idea of where this executable's address 0 is.
    let here = base_address_of_own_executable as *const () as usize;
    let mut info = libc::Dl_info {
        dli_fname: std::ptr::null(),
        dli_fbase: std::ptr::null_mut(),
        dli_sname: std::ptr::null(),
        dli_saddr: std::ptr::null_mut(),
    };
    // SAFETY: `info` is a valid out-pointer; `here` is an address in this executable.
    assert_ne!(unsafe { libc::dladdr(here as *const libc::c_void, &raw mut info) }, 0, "dladdr");
    assert_eq!(base, info.dli_fbase as u64, "base of {}", exe.display());
}

#[test]
fn base_address_when_two_segments_share_a_page() {
    // lld's layout: a read-only segment ending inside the page where the code segment starts.
    let segments = vec![
        crate::segments::Segment { offset: 0, size: 0x1b_c624, vaddr: 0 },
        crate::segments::Segment { offset: 0x1b_c630, size: 0x32_b5a0, vaddr: 0x1b_d630 },
    ];
    let tables = BinaryTables::for_segments(segments);
    // The code mapping starts at the page of file offset 0x1bc000, one page below its addresses.
    assert_eq!(tables.base_avma(0x5555_0000_0000 + 0x1b_d000, 0x1b_c000), Some(0x5555_0000_0000));
    assert_eq!(tables.base_avma(0x5555_0000_0000, 0), Some(0x5555_0000_0000));
}
