//! Exports of the live heap: pprof, folded stacks, a flamegraph SVG, JSON. Pure: symbolized stack reports in,
//! bytes out.

pub mod pprof;

use std::{collections::BTreeMap, fmt::Write as _};

use inferno::flamegraph::{self, color::BasicPalette};

use crate::protocol::{ExportFormat, Frame, StackReport, TopResponse};

/// Why an export could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// A flamegraph needs something to draw.
    #[error("no live allocations to draw{}", .0.map(|p| format!(" for pid {p}")).unwrap_or_default())]
    Empty(Option<u32>),
    #[error("rendering the {0:?} export: {1}")]
    Render(ExportFormat, String),
}

/// What an export is about, for titles.
#[derive(Clone, Copy, Debug, Default)]
pub struct ExportContext {
    /// The process, when the export is limited to one.
    pub pid: Option<u32>,
    /// When the stacks were read, in nanoseconds since the Unix epoch.
    pub time_unix_ns: i64,
    /// Sampled mode: the figures are estimates (said in the JSON, the flamegraph's title and the pprof comment
    /// and labels).
    pub estimated: bool,
}

/// The export of `stacks` in `format`.
pub fn render(format: ExportFormat, stacks: &[StackReport], context: ExportContext) -> Result<Vec<u8>, ExportError> {
    let render_error = |err: std::io::Error| ExportError::Render(format, err.to_string());
    match format {
        ExportFormat::Pprof => pprof::encode(stacks, context.time_unix_ns, context.estimated).map_err(render_error),
        ExportFormat::Folded => Ok(folded(stacks).into_bytes()),
        ExportFormat::Svg => svg(stacks, context),
        ExportFormat::Json => {
            serde_json::to_vec_pretty(&TopResponse { stacks: stacks.to_vec(), estimated: context.estimated })
                .map_err(|err| ExportError::Render(format, err.to_string()))
        }
    }
}

/// A frame's name in folded stacks: the function, else the address (and module); never `;` or a line break,
/// which the format reserves.
fn frame_name(frame: &Frame) -> String {
    let name = match (&frame.function, &frame.module) {
        (Some(function), _) => function.clone(),
        (None, Some(module)) => format!("{} in {}", frame.addr, module.rsplit('/').next().unwrap_or(module)),
        (None, None) => frame.addr.clone(),
    };
    name.replace(';', ":").replace(['\n', '\r'], " ")
}

/// Folded stack -> live bytes, merged and sorted. The root frame is the process, `comm (pid)`; stacks with
/// nothing live are left out.
fn folded_counts(stacks: &[StackReport]) -> BTreeMap<String, u64> {
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    for stack in stacks.iter().filter(|s| s.live_bytes > 0) {
        let mut line = format!("{} ({})", stack.comm, stack.pid).replace(';', ":");
        if stack.frames.is_empty() {
            line.push_str(";(no stack)");
        }
        // Outermost first: the report's frames are innermost first.
        for frame in stack.frames.iter().rev() {
            line.push(';');
            line.push_str(&frame_name(frame));
        }
        *counts.entry(line).or_default() += stack.live_bytes;
    }
    counts
}

/// Folded stacks of live bytes: `comm (pid);outermost;...;innermost BYTES`, one line each, sorted.
// note: in sampled mode (not yet implemented) the byte counts will be estimates.
pub fn folded(stacks: &[StackReport]) -> String {
    folded_counts(stacks).into_iter().fold(String::new(), |mut out, (stack, bytes)| {
        let _ = writeln!(out, "{stack} {bytes}");
        out
    })
}

/// A flamegraph of live bytes, as SVG (rendered by inferno).
pub fn svg(stacks: &[StackReport], context: ExportContext) -> Result<Vec<u8>, ExportError> {
    let counts = folded_counts(stacks);
    if counts.is_empty() {
        return Err(ExportError::Empty(context.pid));
    }
    let lines: Vec<String> = counts.into_iter().map(|(stack, bytes)| format!("{stack} {bytes}")).collect();
    let mut options = flamegraph::Options::default();
    if context.estimated { "Live heap (estimated from samples)" } else { "Live heap" }.clone_into(&mut options.title);
    options.subtitle = Some(match context.pid {
        Some(pid) => format!("leakprobe: bytes allocated and not freed in pid {pid}"),
        None => "leakprobe: bytes allocated and not freed, by process".to_owned(),
    });
    "bytes".clone_into(&mut options.count_name);
    "Function:".clone_into(&mut options.name_type);
    options.colors = flamegraph::color::Palette::Basic(BasicPalette::Mem);
    // The same input always gives the same colors.
    options.deterministic = true;
    // Lines come sorted from the BTreeMap.
    options.no_sort = true;
    let mut out = Vec::new();
    flamegraph::from_lines(&mut options, lines.iter().map(String::as_str), &mut out)
        .map_err(|err| ExportError::Render(ExportFormat::Svg, err.to_string()))?;
    Ok(out)
}

#[cfg(test)]
mod tests;
