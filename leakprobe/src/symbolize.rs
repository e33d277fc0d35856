//! Symbolization with blazesym, on its own thread (its `Symbolizer` is not `Send`, and symbolizing reads
//! files: it must not stall the async tasks).

use std::{path::Path, sync::Arc, sync::mpsc, thread};

use blazesym::{
    Pid,
    symbolize::{
        Input, Sym, Symbolized, Symbolizer,
        source::{Elf, Process, Source},
    },
};
use tokio::sync::oneshot;

use crate::{
    procfs::Mapping,
    protocol::{Frame, hex_addr},
};

/// One stack to symbolize: return addresses in process `pid`.
#[derive(Debug)]
pub struct StackRequest {
    pub pid: u32,
    pub addrs: Vec<u64>,
    /// The process's executable mappings, captured earlier: when set, addresses are resolved through them and
    /// the files they name, so the stack symbolizes after the process is gone.
    pub mappings: Option<Arc<Vec<Mapping>>>,
}

struct Job {
    stacks: Vec<StackRequest>,
    reply: oneshot::Sender<Vec<Vec<Frame>>>,
}

/// Handle to the symbolizer thread. Cloning is cheap; the thread ends when every handle is dropped.
#[derive(Clone, Debug)]
pub struct SymbolizerHandle {
    tx: mpsc::Sender<Job>,
}

impl SymbolizerHandle {
    /// Starts the thread.
    pub fn spawn() -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel::<Job>();
        thread::Builder::new().name("symbolizer".into()).spawn(move || {
            let symbolizer = Symbolizer::builder().enable_demangling(true).enable_code_info(true).build();
            for job in rx {
                let frames = job.stacks.iter().map(|stack| symbolize_stack(&symbolizer, stack)).collect();
                // The asker may have gone away (client disconnected): nothing to do then.
                let _ = job.reply.send(frames);
            }
        })?;
        Ok(Self { tx })
    }

    /// Symbolizes stacks; frames that cannot be resolved keep their address and no name.
    pub async fn symbolize(&self, stacks: Vec<StackRequest>) -> Vec<Vec<Frame>> {
        let fallback: Vec<Vec<Frame>> = stacks.iter().map(|s| s.addrs.iter().map(|&a| bare(a)).collect()).collect();
        let (reply, rx) = oneshot::channel();
        if self.tx.send(Job { stacks, reply }).is_err() {
            return fallback;
        }
        rx.await.unwrap_or(fallback)
    }
}

fn bare(addr: u64) -> Frame {
    Frame { addr: hex_addr(addr), ..Frame::default() }
}

fn symbolize_stack(symbolizer: &Symbolizer, stack: &StackRequest) -> Vec<Frame> {
    if let Some(mappings) = &stack.mappings {
        return stack.addrs.iter().map(|&addr| symbolize_in_file(symbolizer, mappings, addr)).collect();
    }
    // Every frame is a return address: the call is the instruction before it, so look up `addr - 1`
    // (the return address itself may already belong to the next line or function).
    let lookups: Vec<u64> = stack.addrs.iter().map(|a| a.saturating_sub(1)).collect();
    let source = Source::Process(Process::new(Pid::from(stack.pid)));
    let results = match symbolizer.symbolize(&source, Input::AbsAddr(&lookups)) {
        Ok(results) => results,
        Err(err) => {
            log::debug!("symbolizing stack of pid {}: {err}", stack.pid);
            return stack.addrs.iter().map(|&a| bare(a)).collect();
        }
    };
    stack
        .addrs
        .iter()
        .zip(results)
        .map(|(&addr, result)| match result {
            Symbolized::Sym(sym) => {
                let module = sym.module.as_ref().map(|m| m.to_string_lossy().into_owned());
                sym_frame(addr, sym, module)
            }
            Symbolized::Unknown(_) => bare(addr),
        })
        .collect()
}

/// The frame of return address `addr`, resolved to `sym`.
fn sym_frame(addr: u64, sym: Sym<'_>, module: Option<String>) -> Frame {
    let (file, line) = sym.code_info.as_ref().map_or((None, None), |info| {
        let file = match &info.dir {
            Some(dir) => dir.join(&*info.file),
            None => Path::new(&*info.file).to_path_buf(),
        };
        (Some(file.display().to_string()), info.line)
    });
    Frame { addr: hex_addr(addr), function: Some(sym.name.into_owned()), file, line, module }
}

/// Resolves one return address through the mapping that holds it, from the mapped file itself.
fn symbolize_in_file(symbolizer: &Symbolizer, mappings: &[Mapping], addr: u64) -> Frame {
    let lookup = addr.saturating_sub(1);
    let Some(mapping) = mappings.iter().find(|m| (m.start..m.end).contains(&lookup)) else {
        return bare(addr);
    };
    let file_offset = lookup - mapping.start + mapping.offset;
    let source = Source::Elf(Elf::new(&mapping.path));
    match symbolizer.symbolize_single(&source, Input::FileOffset(file_offset)) {
        Ok(Symbolized::Sym(sym)) => sym_frame(addr, sym, Some(mapping.path.clone())),
        Ok(Symbolized::Unknown(_)) => Frame { module: Some(mapping.path.clone()), ..bare(addr) },
        Err(err) => {
            log::debug!("symbolizing {addr:#x} in {}: {err}", mapping.path);
            Frame { module: Some(mapping.path.clone()), ..bare(addr) }
        }
    }
}
