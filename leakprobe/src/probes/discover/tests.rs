use super::*;

const MAPS: &str = "\
55d0c6a00000-55d0c6a01000 r--p 00000000 fe:00 1234 /tmp/leaker
55d0c6a01000-55d0c6a02000 r-xp 00001000 fe:00 1234 /tmp/leaker
55d0c7e3f000-55d0c7e60000 rw-p 00000000 00:00 0                          [heap]
7f1e2a428000-7f1e2a59d000 r-xp 00028000 fe:00 99 /usr/lib/x86_64-linux-gnu/libc.so.6
7f1e2b428000-7f1e2b59d000 r-xp 00028000 103:02 99 /usr/lib/x86_64-linux-gnu/libc.so.6
7f1e2a600000-7f1e2a601000 r-xp 00000000 fe:00 77 /tmp/gone.so (deleted)
7ffd5e3f1000-7ffd5e3f3000 r-xp 00000000 00:00 0                          [vdso]
";

#[test]
fn executable_file_mappings_one_per_file() {
    let maps = exec_mappings(MAPS);
    let files: Vec<String> = maps.iter().map(|m| format!("{} {}", m.file, m.path)).collect();
    assert_eq!(
        files,
        [
            "fe:00:1234 /tmp/leaker",
            "fe:00:99 /usr/lib/x86_64-linux-gnu/libc.so.6",
            // Same path and inode on another device: another file (a container's libc).
            "103:02:99 /usr/lib/x86_64-linux-gnu/libc.so.6",
            "fe:00:77 /tmp/gone.so",
        ]
    );
    assert!(maps[3].deleted && !maps[0].deleted);
    assert_eq!((maps[0].start, maps[0].end), (0x55d0_c6a0_1000, 0x55d0_c6a0_2000));
}

#[test]
fn own_files_keep_their_path_and_id() {
    let text = fs::read_to_string("/proc/self/maps").expect("own maps");
    let maps = exec_mappings(&text);
    let libc = maps.iter().find(|m| m.path.contains("libc.so")).expect("libc is mapped");
    let meta = fs::metadata(&libc.path).expect("libc exists");
    assert_eq!(FileId::of(&meta), libc.file, "st_dev split like /proc/PID/maps");
    let (open, shown) = open_path(std::process::id(), libc);
    assert_eq!((open.to_str(), shown.to_str()), (Some(libc.path.as_str()), Some(libc.path.as_str())));
}

#[test]
fn other_files_open_through_map_files() {
    let text = fs::read_to_string("/proc/self/maps").expect("own maps");
    let mut libc = exec_mappings(&text).into_iter().find(|m| m.path.contains("libc.so")).expect("libc");
    // As if the path led to another inode from here (a container's libc at the host's path).
    libc.file.inode += 1;
    let (open, shown) = open_path(42, &libc);
    assert_eq!(open, PathBuf::from(format!("/proc/42/map_files/{:x}-{:x}", libc.start, libc.end)));
    assert_eq!(shown, PathBuf::from(format!("/proc/42/root{}", libc.path)));
}
