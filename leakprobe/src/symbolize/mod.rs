//! Symbolization with blazesym, on its own thread (its `Symbolizer` is not `Send`, and symbolizing reads
//! files: it must not stall the async tasks).
//!
//! A process's memory maps are read when it is first seen and kept (bounded, least recently used first
//! out), so its stacks still symbolize after it exited or exec'd; files the daemon cannot reach by their path
//! (a container's) are kept open from then on (bounded, see [`maps::OpenFiles`]). Frames are resolved by
//! (binary, file offset), the binary told by device and inode, once, and cached (bounded): the same library
//! mapped by many processes is symbolized once.

mod jit;
pub mod maps;
pub mod perfmap;

use std::{
    collections::{HashMap, HashSet},
    num::NonZeroUsize,
    path::{Path, PathBuf},
    sync::{Arc, mpsc},
    thread,
    time::Instant,
};

use blazesym::symbolize::{
    Input, Symbolized, Symbolizer,
    evict::{self, Evict},
    source::{Elf, Source},
};
use lru::LruCache;
use tokio::sync::oneshot;

use self::maps::{KeptFile, Mapping};
use crate::protocol::{Frame, hex_addr};

/// One stack to symbolize: return addresses in process `pid`.
#[derive(Debug)]
pub struct StackRequest {
    pub pid: u32,
    pub addrs: Vec<u64>,
}

/// Bounds of the symbolizer's caches.
#[derive(Clone, Copy, Debug)]
pub struct CacheLimits {
    /// Processes whose maps are kept.
    pub processes: NonZeroUsize,
    /// Resolved frames kept.
    pub frames: NonZeroUsize,
    /// Binaries blazesym keeps open and parsed (its own cache would keep every binary ever read, for as long
    /// as the daemon runs): the least recently used beyond this are closed, and parsed again when needed.
    pub binaries: NonZeroUsize,
}

impl Default for CacheLimits {
    fn default() -> Self {
        Self {
            processes: NonZeroUsize::new(8_192).unwrap_or(NonZeroUsize::MIN),
            frames: NonZeroUsize::new(262_144).unwrap_or(NonZeroUsize::MIN),
            binaries: NonZeroUsize::new(256).unwrap_or(NonZeroUsize::MIN),
        }
    }
}

enum Job {
    /// A process was first seen: keep its maps, as read by the sender at that moment (`None`: read them now).
    Seen(u32, Option<Vec<Mapping>>),
    /// A process called `execve`: its old image's maps no longer apply; keep the new image's if read.
    Exec(u32, Option<Vec<Mapping>>),
    Symbolize {
        stacks: Vec<StackRequest>,
        /// Stacks not begun by then keep their bare addresses.
        deadline: Option<Instant>,
        reply: oneshot::Sender<Frames>,
    },
    Identify {
        stacks: Vec<StackRequest>,
        reply: oneshot::Sender<Vec<Option<u64>>>,
    },
}

/// The frames of each stack asked, and how many stacks the deadline left bare.
type Frames = (Vec<Vec<Frame>>, usize);

/// Handle to the symbolizer thread. Cloning is cheap; the thread ends when every handle is dropped.
#[derive(Clone, Debug)]
pub struct SymbolizerHandle {
    tx: mpsc::Sender<Job>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Seen(pid, _) => write!(f, "Seen({pid})"),
            Self::Exec(pid, _) => write!(f, "Exec({pid})"),
            Self::Symbolize { stacks, .. } => write!(f, "Symbolize({} stacks)", stacks.len()),
            Self::Identify { stacks, .. } => write!(f, "Identify({} stacks)", stacks.len()),
        }
    }
}

impl SymbolizerHandle {
    /// Starts the thread.
    pub fn spawn(limits: CacheLimits) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel::<Job>();
        thread::Builder::new().name("symbolizer".into()).spawn(move || {
            crate::privileges::drop_in_this_thread();
            let mut worker = Worker::new(limits);
            for job in rx {
                match job {
                    Job::Seen(pid, maps) => worker.seen_with(pid, maps),
                    Job::Exec(pid, maps) => worker.exec(pid, maps),
                    Job::Symbolize { stacks, deadline, reply } => {
                        worker.refreshed.clear();
                        let mut late = 0;
                        let frames = stacks
                            .iter()
                            .map(|stack| {
                                if deadline.is_some_and(|deadline| Instant::now() >= deadline) {
                                    late += 1;
                                    return stack.addrs.iter().map(|&a| bare(a)).collect();
                                }
                                worker.symbolize(stack)
                            })
                            .collect();
                        // The asker may have gone away (client disconnected): nothing to do then.
                        let _ = reply.send((frames, late));
                    }
                    Job::Identify { stacks, reply } => {
                        worker.refreshed.clear();
                        let _ = reply.send(stacks.iter().map(|stack| worker.identity(stack)).collect());
                    }
                }
            }
        })?;
        Ok(Self { tx })
    }

    /// Records that a process was first seen, so its maps are kept for after it exits. With `read_now`, they
    /// are read here, in the caller's thread, at once: a process killed a moment later (an OOM victim in a
    /// small memory cgroup) may be gone by the time the symbolizer thread, busy with other jobs, gets to it.
    pub fn seen(&self, pid: u32, read_now: bool) {
        let maps = if read_now { maps::read_parsed(pid) } else { None };
        // Only fails when the thread is gone (shutdown).
        let _ = self.tx.send(Job::Seen(pid, maps));
    }

    /// Records that a process called `execve`: the maps kept of its old image go; with `read_now`, the new
    /// image's are read at once (its executable and loader; its libraries come with its first event's
    /// [`Self::seen`]), so a process that dies before the daemon sees it allocate still symbolizes.
    pub fn exec(&self, pid: u32, read_now: bool) {
        let maps = if read_now { maps::read_parsed(pid) } else { None };
        let _ = self.tx.send(Job::Exec(pid, maps));
    }

    /// Symbolizes stacks; frames that cannot be resolved keep their address and no name.
    pub async fn symbolize(&self, stacks: Vec<StackRequest>) -> Vec<Vec<Frame>> {
        self.symbolize_until(stacks, None).await.0
    }

    /// [`Self::symbolize`], but the stacks the thread has not begun by `deadline` (it may be busy with other
    /// jobs) keep their bare addresses: the frames, and how many stacks were left so.
    pub async fn symbolize_until(&self, stacks: Vec<StackRequest>, deadline: Option<Instant>) -> Frames {
        let fallback: Vec<Vec<Frame>> = stacks.iter().map(|s| s.addrs.iter().map(|&a| bare(a)).collect()).collect();
        let all = fallback.len();
        let (reply, rx) = oneshot::channel();
        if self.tx.send(Job::Symbolize { stacks, deadline, reply }).is_err() {
            return (fallback, all);
        }
        rx.await.unwrap_or((fallback, all))
    }
}

impl SymbolizerHandle {
    /// The identity of each stack by its resolved frames, for stacks with JIT frames a perf map names (`None`
    /// for the others: their raw frames are their identity). Frames in files count by (file, offset); JIT
    /// frames by the function's name without its compilation tier (see [`perfmap::identity_name`]); so one
    /// function recompiled or moved keeps its identity.
    pub async fn identify(&self, stacks: Vec<StackRequest>) -> Vec<Option<u64>> {
        let fallback = vec![None; stacks.len()];
        let (reply, rx) = oneshot::channel();
        if self.tx.send(Job::Identify { stacks, reply }).is_err() {
            return fallback;
        }
        rx.await.unwrap_or(fallback)
    }
}

fn bare(addr: u64) -> Frame {
    Frame { addr: hex_addr(addr), ..Frame::default() }
}

/// What a (binary, offset) resolves to.
#[derive(Clone, Debug, Default)]
struct Resolved {
    function: Option<String>,
    file: Option<String>,
    line: Option<u32>,
}

/// A binary, by (device, inode), and a file offset in it.
type FrameKey = ((u64, u64), u64);

struct Worker {
    symbolizer: Symbolizer,
    maps: LruCache<u32, Arc<Vec<Mapping>>>,
    frames: LruCache<FrameKey, Resolved>,
    /// The paths blazesym has parsed, least recently used first out (see [`CacheLimits::binaries`]).
    parsed: LruCache<PathBuf, ()>,
    /// Files of other mount namespaces kept open (see [`maps::read`]).
    open_files: maps::OpenFiles,
    /// Perf maps of processes with JIT code.
    jit: jit::JitMaps,
    /// Processes whose maps were read again during the current job: once is enough (a job may hold thousands of
    /// one process's stacks, each with an address no file covers).
    refreshed: HashSet<u32>,
}

/// Where to read one binary now: its path, or a kept file's `/proc/self/fd/N` (held while it is read).
struct Readable {
    path: Arc<Path>,
    _kept: Option<Arc<KeptFile>>,
}

impl Readable {
    /// How `mapping`'s file reads now; `None` when it does not: a kept file let go, a file never opened, or a
    /// path that leads to another file now (replaced since it was mapped: reading it would name wrong functions).
    fn of(mapping: &Mapping) -> Option<Self> {
        match &mapping.source {
            maps::Source::Path => {
                maps::leads_to(&mapping.path, mapping.file()).then(|| Self { path: mapping.path.clone(), _kept: None })
            }
            maps::Source::Kept(kept) => {
                let kept = kept.upgrade()?;
                Some(Self { path: kept.path.clone(), _kept: Some(kept) })
            }
            maps::Source::Unreadable => None,
        }
    }
}

/// Seed of the stack identities' hash.
const IDENTITY_SEED: u64 = 0x6a69_745f_6964;

/// Files of other mount namespaces kept open at most (each a file descriptor).
const MAX_OPEN_FILES: usize = 512;

impl Worker {
    fn new(limits: CacheLimits) -> Self {
        Self {
            symbolizer: Symbolizer::builder().enable_demangling(true).enable_code_info(true).build(),
            maps: LruCache::new(limits.processes),
            frames: LruCache::new(limits.frames),
            parsed: LruCache::new(limits.binaries),
            open_files: maps::OpenFiles::new(NonZeroUsize::new(MAX_OPEN_FILES).unwrap_or(NonZeroUsize::MIN)),
            jit: jit::JitMaps::default(),
            refreshed: HashSet::new(),
        }
    }

    #[cfg(test)]
    fn seen(&mut self, pid: u32) {
        self.seen_with(pid, maps::read_parsed(pid));
    }

    /// Keeps `read` (the maps of `pid` when it was first seen), completed while it lives; when the process was
    /// already gone then, re-reads them (it may have exec'd since), else keeps what is kept (its image's maps
    /// read at exec).
    fn seen_with(&mut self, pid: u32, read: Option<Vec<Mapping>>) {
        if let Some(maps) = self.complete_maps(pid, read) {
            self.maps.put(pid, Arc::new(maps));
        }
    }

    fn exec(&mut self, pid: u32, read: Option<Vec<Mapping>>) {
        self.maps.pop(&pid);
        if let Some(maps) = read {
            self.seen_with(pid, Some(maps));
        }
    }

    /// Reads the maps of a live process, and lets blazesym forget the files the kept set let go: it caches each
    /// file by path, open, for as long as it lives, and a released `/proc/self/fd/N` will name another file.
    fn read_maps(&mut self, pid: u32) -> Option<Vec<Mapping>> {
        self.complete_maps(pid, None)
    }

    /// [`Self::read_maps`], from maps read a moment ago when there are (`read`).
    fn complete_maps(&mut self, pid: u32, read: Option<Vec<Mapping>>) -> Option<Vec<Mapping>> {
        let maps = match read {
            Some(read) => Some(maps::with_sources(pid, read, &mut self.open_files)),
            None => maps::read(pid, &mut self.open_files),
        };
        for path in self.open_files.take_released() {
            self.parsed.pop(&*path);
            self.evict(&path);
        }
        maps
    }

    /// Lets blazesym close and forget a binary it parsed.
    fn evict(&mut self, path: &Path) {
        let evict = Evict::Elf(evict::Elf::new(path.to_path_buf()));
        if let Err(err) = self.symbolizer.evict(&evict) {
            log::debug!("symbolizer: evicting {}: {err}", path.display());
        }
    }

    /// The maps of `pid` covering every address with a readable file, re-read while the process lives if
    /// some address is not covered (a library loaded after the process was first seen; JIT code its perf map
    /// does not name) or its frame is not cached and its file not readable (a kept file let go, a file
    /// replaced since it was mapped).
    fn maps_for(&mut self, pid: u32, lookups: &[u64]) -> Option<Arc<Vec<Mapping>>> {
        let cached = self.maps.get(&pid).cloned();
        if let Some(maps) = &cached
            && lookups.iter().all(|&a| match maps::lookup(maps, a) {
                Some((mapping, offset)) => {
                    self.frames.contains(&(mapping.file(), offset)) || Readable::of(mapping).is_some()
                }
                None => self.jit.knows(pid, a),
            })
        {
            return cached;
        }
        if !self.refreshed.insert(pid) {
            return cached;
        }
        match self.read_maps(pid) {
            Some(fresh) => {
                let fresh = Arc::new(fresh);
                self.maps.put(pid, fresh.clone());
                Some(fresh)
            }
            None => cached,
        }
    }

    /// See [`SymbolizerHandle::identify`].
    fn identity(&mut self, stack: &StackRequest) -> Option<u64> {
        use std::hash::{BuildHasher as _, Hash as _, Hasher as _};
        let now = Instant::now();
        // Only stacks with JIT frames get an identity: for a process without a perf map (nearly all) there is
        // nothing to resolve, and its maps are not read. Every new stack of every process comes here.
        if !self.jit.has_map(stack.pid, now) {
            return None;
        }
        let lookups: Vec<u64> = stack.addrs.iter().map(|a| a.saturating_sub(1)).collect();
        let maps = self.maps_for(stack.pid, &lookups)?;
        let mut jit = false;
        let mut hasher = foldhash::fast::FixedState::with_seed(IDENTITY_SEED).build_hasher();
        for &addr in &lookups {
            match maps::lookup(&maps, addr) {
                Some((mapping, offset)) => (0u8, mapping.file(), offset).hash(&mut hasher),
                None => match self.jit.lookup(stack.pid, addr, now) {
                    Some(frame) => {
                        jit = true;
                        (1u8, perfmap::identity_name(&frame.name)).hash(&mut hasher);
                    }
                    None => (2u8, addr).hash(&mut hasher),
                },
            }
        }
        jit.then(|| hasher.finish())
    }

    fn symbolize(&mut self, stack: &StackRequest) -> Vec<Frame> {
        // CPython frames spliced into the stack (see `python::names`).
        if stack.addrs.iter().any(|&a| crate::python::names::is_python(a)) {
            return crate::python::names::symbolize_mixed(&stack.addrs, |addrs| {
                self.symbolize(&StackRequest { pid: stack.pid, addrs })
            });
        }
        // Every frame is a return address: the call is the instruction before it, so look up `addr - 1`
        // (the return address itself may already belong to the next line or function).
        let lookups: Vec<u64> = stack.addrs.iter().map(|a| a.saturating_sub(1)).collect();
        let Some(maps) = self.maps_for(stack.pid, &lookups) else {
            return stack.addrs.iter().map(|&a| bare(a)).collect();
        };
        let found: Vec<Option<(&Mapping, u64)>> = lookups.iter().map(|&a| maps::lookup(&maps, a)).collect();
        let keys: Vec<Option<FrameKey>> =
            found.iter().map(|found| found.map(|(mapping, offset)| (mapping.file(), offset))).collect();
        let shown: Vec<Option<String>> =
            found.iter().map(|found| found.map(|(m, _)| m.path.display().to_string())).collect();
        let mut misses: HashMap<(u64, u64), (&Mapping, Vec<u64>)> = HashMap::new();
        for (mapping, offset) in found.iter().flatten() {
            if !self.frames.contains(&(mapping.file(), *offset)) {
                misses.entry(mapping.file()).or_insert_with(|| (mapping, Vec::new())).1.push(*offset);
            }
        }
        for (file, (mapping, offsets)) in misses {
            // Unreadable now: the frames stay unresolved, and uncached, as long as that lasts.
            if let Some(readable) = Readable::of(mapping) {
                self.resolve(file, &readable.path, &offsets);
            }
        }
        let now = Instant::now();
        stack
            .addrs
            .iter()
            .zip(&lookups)
            .zip(keys.into_iter().zip(shown))
            .map(|((&addr, &lookup), (key, module))| match key {
                Some(key) => {
                    let resolved = self.frames.get(&key).cloned().unwrap_or_default();
                    Frame {
                        addr: hex_addr(addr),
                        function: resolved.function,
                        file: resolved.file,
                        line: resolved.line,
                        module,
                    }
                }
                // Outside every file: JIT code, named by the process's perf map if it has one.
                None => self.jit.lookup(stack.pid, lookup, now).map_or_else(
                    || bare(addr),
                    |jit| {
                        let name = perfmap::split_name(&jit.name);
                        Frame {
                            addr: hex_addr(addr),
                            function: Some(name.function),
                            file: name.file,
                            line: name.line,
                            module: Some(jit.map.to_string()),
                        }
                    },
                ),
            })
            .collect()
    }

    /// Resolves offsets in one binary, `file`, read at `path`, into the frame cache (unknown ones are cached as
    /// unknown too).
    fn resolve(&mut self, file: (u64, u64), path: &Path, offsets: &[u64]) {
        if let Some((oldest, ())) = self.parsed.push(path.to_path_buf(), ())
            && oldest != path
        {
            self.evict(&oldest);
        }
        let source = Source::Elf(Elf::new(path.to_path_buf()));
        let results = match self.symbolizer.symbolize(&source, Input::FileOffset(offsets)) {
            Ok(results) => results,
            Err(err) => {
                log::debug!("symbolizing in {}: {err}", path.display());
                Vec::new()
            }
        };
        let mut results = results.into_iter();
        for &offset in offsets {
            let resolved = match results.next() {
                Some(Symbolized::Sym(sym)) => {
                    let (file, line) = sym.code_info.as_ref().map_or((None, None), |info| {
                        let file = match &info.dir {
                            Some(dir) => dir.join(&*info.file),
                            None => PathBuf::from(&*info.file),
                        };
                        (Some(file.display().to_string()), info.line)
                    });
                    Resolved { function: Some(sym.name.into_owned()), file, line }
                }
                Some(Symbolized::Unknown(_)) | None => Resolved::default(),
            };
            self.frames.put((file, offset), resolved);
        }
    }
}

#[cfg(test)]
mod tests;
