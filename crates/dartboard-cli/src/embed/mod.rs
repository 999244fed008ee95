//! `dartboard embed`: texts in, one embedding per text out, in input order, at corpus
//! scale.
//!
//! The input is read, encoded and written in windows of `--window` texts (fewer
//! when their bytes would pass what one encode call accepts), so memory does not
//! grow with the corpus; the embedder sorts each window by length, which
//! keeps padding low. With `--output FILE` every finished window is stored in
//! `FILE.partial/` ([`partial`]) and the file is assembled from those at the end, so
//! a killed run continues with `--resume` and its output is byte-identical to an
//! uninterrupted one. Without `--output`, JSON Lines stream to stdout.
//!
//! `--truncate-dim` and `--precision` are sentence-transformers' `truncate_dim` and
//! `precision`: each window is truncated as it is encoded (chunks store the truncated
//! floats), then quantized as it is written. int8/uint8 need per-dimension ranges:
//! from `--calibration FILE`, or else from every embedding of the run, as
//! `encode(corpus, precision="int8")` takes them from all of its outputs; those are
//! known only once the run is complete, so they are computed by a pass over the
//! stored chunks before the file is assembled, and need `--output FILE`.

mod calibration;
mod input;
mod output;
mod partial;
mod progress;

use std::io::{self, BufWriter, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use dartboard_embeddings::{
    quantize_rows, EmbedError, Embeddings, Precision, Prompt, QuantizationRanges, RangesBuilder, MAX_REQUEST_BYTES,
};

use crate::files::{output_target, write_output, OutputTarget};
use crate::ModelArgs;
use input::{InputFormat, InputSpec, TextSource, Texts};
use output::{Element, OutputFormat, RowWriter, Rows, Values};
use partial::{Manifest, Partial};
use progress::Progress;

/// Ctrl-C stopped the run between windows; the CLI exits with 130, as shells expect.
#[derive(Debug)]
pub struct Interrupted(String);

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Interrupted {}

#[derive(Args)]
pub struct EmbedArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Read texts from FILE (`-` is stdin). See --input-format.
    #[arg(long, value_name = "FILE", conflicts_with = "texts")]
    input: Option<PathBuf>,
    /// How FILE holds the texts: one per line (every line is a text), JSON Lines
    /// (--text-field), or Parquet (--text-column).
    #[arg(long, value_enum, default_value = "lines", requires = "input")]
    input_format: InputFormat,
    /// The JSON field holding the text, for --input-format jsonl.
    #[arg(long, value_name = "NAME", default_value = "text")]
    text_field: String,
    /// The string column holding the text, for --input-format parquet.
    #[arg(long, value_name = "NAME", default_value = "text")]
    text_column: String,
    /// Write to FILE instead of stdout. A regular file appears atomically when the run
    /// is complete (a symlink's target is written; a device or FIFO is written in place).
    #[arg(long, value_name = "FILE")]
    output: Option<PathBuf>,
    /// Output format: JSON Lines, a float32 .npy, or Parquet (npy and Parquet need --output).
    #[arg(long, value_enum, default_value = "jsonl")]
    format: OutputFormat,
    /// Also write each text (JSON Lines and Parquet).
    #[arg(long)]
    keep_text: bool,
    /// Continue the interrupted run that wrote FILE.partial/ (same input and settings).
    #[arg(long, requires = "output")]
    resume: bool,
    /// Texts read, encoded and written at a time: memory is bounded by it.
    #[arg(long, value_name = "N", default_value_t = 8192, value_parser = clap::value_parser!(u32).range(1..=1_048_576))]
    window: u32,
    /// No progress output.
    #[arg(long, short)]
    quiet: bool,
    /// Seconds between progress lines when stderr is not a terminal.
    #[arg(long, value_name = "SECONDS", default_value_t = 5.0, hide = true)]
    progress_every: f64,
    /// Prepend this text to every input (e.g. "query: " for e5 models).
    #[arg(long, conflicts_with = "prompt_name")]
    prompt: Option<String>,
    /// Prepend the model's prompt of this name (from config_sentence_transformers.json).
    #[arg(long)]
    prompt_name: Option<String>,
    /// Use no prompt even if the model has a default one.
    #[arg(long, conflicts_with_all = ["prompt", "prompt_name"])]
    no_prompt: bool,
    /// Keep the first N dimensions of each embedding (sentence-transformers'
    /// truncate_dim, for Matryoshka models): after normalization, not renormalized.
    #[arg(long, value_name = "N")]
    truncate_dim: Option<usize>,
    /// Output values: float32, int8, uint8, binary or ubinary (sentence-transformers'
    /// quantize_embeddings). int8/uint8 take their per-dimension ranges from
    /// --calibration, else from all embeddings of the run (which needs --output FILE).
    #[arg(long, value_name = "PRECISION", default_value = "float32")]
    precision: Precision,
    /// Embeddings whose per-dimension min/max set the int8/uint8 buckets: .npy
    /// (float32/float64), .parquet (column "embedding") or JSON Lines ("embedding").
    #[arg(long, value_name = "FILE")]
    calibration: Option<PathBuf>,
    /// Texts to embed.
    texts: Vec<String>,
}

impl EmbedArgs {
    fn prompt(&self) -> Prompt<'_> {
        match (&self.prompt, &self.prompt_name, self.no_prompt) {
            (Some(text), _, _) => Prompt::Text(text),
            (None, Some(name), _) => Prompt::Name(name),
            (None, None, true) => Prompt::None,
            (None, None, false) => Prompt::Default,
        }
    }

    fn prompt_description(&self) -> String {
        match (&self.prompt, &self.prompt_name, self.no_prompt) {
            (Some(text), _, _) => format!("text:{text}"),
            (None, Some(name), _) => format!("name:{name}"),
            (None, None, true) => "none".to_owned(),
            (None, None, false) => "default".to_owned(),
        }
    }
}

/// The texts to embed: a file, stdin, or the arguments.
enum Source {
    Input(InputSpec),
    Arguments(Vec<String>),
}

impl Source {
    fn open(&self) -> Result<Texts> {
        match self {
            Source::Input(spec) => spec.open(),
            Source::Arguments(texts) => Ok(Texts::from(TextSource::List(texts.clone().into_iter()))),
        }
    }

    /// Only a file can be read again, so only a file's run can resume.
    fn resumable(&self) -> bool {
        matches!(self, Source::Input(spec) if !spec.is_stdin())
    }

    fn count(&self) -> Option<u64> {
        match self {
            Source::Input(spec) => spec.count(),
            Source::Arguments(texts) => Some(texts.len() as u64),
        }
    }
}

pub fn run(args: EmbedArgs) -> Result<()> {
    let source = match &args.input {
        Some(path) => {
            let field = match args.input_format {
                InputFormat::Parquet => args.text_column.clone(),
                _ => args.text_field.clone(),
            };
            Source::Input(InputSpec { path: path.clone(), format: args.input_format, field })
        }
        None if !args.texts.is_empty() => Source::Arguments(args.texts.clone()),
        None => bail!("no texts to embed: pass them as arguments or with --input FILE"),
    };
    if args.keep_text && args.format == OutputFormat::Npy {
        bail!("--keep-text is for JSON Lines and Parquet; a .npy file holds only numbers");
    }
    let target = match &args.output {
        Some(path) => Some(output_target(path)?),
        None => None,
    };
    let streams = matches!(target, None | Some(OutputTarget::InPlace(_)));
    if streams && !args.format.streams() {
        bail!(
            "--format {:?} needs --output FILE naming a regular file (it cannot stream to a pipe or terminal)",
            args.format
        );
    }
    if args.resume && !source.resumable() {
        bail!("--resume needs --input FILE: texts from stdin or the arguments cannot be read again");
    }
    if args.resume && streams {
        bail!("--resume needs --output naming a regular file");
    }
    if args.calibration.is_some() && !args.precision.needs_ranges() {
        bail!(
            "--calibration sets the buckets of --precision int8 or uint8; --precision {} does not use it, so \
             leave it out (or pick int8/uint8)",
            args.precision
        );
    }
    if streams && args.precision.needs_ranges() && args.calibration.is_none() {
        bail!(
            "--precision {} takes its per-dimension ranges from every embedding of the run, which are known only \
             at its end, so it cannot stream; write to --output FILE (a regular file), or give the ranges with \
             --calibration FILE",
            args.precision
        );
    }
    // Read before loading the model: a bad calibration file should not cost a load.
    let calibration = match &args.calibration {
        Some(path) => Some(calibration::read_ranges(path)?),
        None => None,
    };
    // Open the input before loading the model: a typo in --input should not cost a load.
    let mut texts = source.open()?;

    let (config, model) = args.model.load()?;
    let model_dim = model.embedding_dim();
    let dim = match args.truncate_dim {
        None => model_dim,
        Some(n) if (1..=model_dim).contains(&n) => n,
        Some(n) => {
            return Err(anyhow::Error::new(EmbedError::TruncateDim { requested: n, dim: model_dim })
                .context(format!("--truncate-dim {n} does not fit model {}", config.model)))
        }
    };
    let ranges = match calibration {
        Some(ranges) => Some(fit_calibration(ranges, dim, model_dim, args.calibration.as_deref())?),
        None => None,
    };
    let truncate = |embeddings: Embeddings| -> Result<Embeddings> { Ok(embeddings.truncate_dim(dim)?) };
    let element = Element::from(args.precision);
    let row_len = args.precision.row_len(dim);
    let window = args.window as usize;
    let interrupted = Arc::new(AtomicBool::new(false));
    {
        let flag = interrupted.clone();
        // A second Ctrl-C ends the process at once; the first lets the window finish.
        let _ = ctrlc::set_handler(move || {
            if flag.swap(true, Ordering::SeqCst) {
                std::process::exit(130);
            }
        });
    }
    let log_every = Duration::from_secs_f64(args.progress_every.max(0.0));

    let Some(OutputTarget::Replace(final_path)) = target else {
        // Stream JSON Lines to stdout, or into a device or FIFO.
        let mut progress = Progress::new(args.quiet, source.count(), 0, log_every);
        let mut run = |out: &mut (dyn Write + Send)| -> Result<()> {
            let mut writer = RowWriter::new(OutputFormat::Jsonl, out, element, row_len, 0, args.keep_text)?;
            loop {
                if interrupted.load(Ordering::SeqCst) {
                    return Err(Interrupted("interrupted".to_owned()).into());
                }
                let batch = texts.take(window, MAX_REQUEST_BYTES)?;
                if batch.is_empty() {
                    break;
                }
                let refs: Vec<&str> = batch.iter().map(String::as_str).collect();
                let embeddings = truncate(model.encode_with(&refs, args.prompt())?)?;
                let texts_kept = args.keep_text.then_some(batch.as_slice());
                // Every precision that streams quantizes a window on its own: bits need no
                // ranges, and int8/uint8 reach here only with --calibration's.
                let quantized = quantize_rows(dim, embeddings.as_slice(), args.precision, ranges.as_ref())?;
                writer.write(&Rows { dim: row_len, values: Values::from(quantized.data()), texts: texts_kept })?;
                progress.add(batch.len() as u64);
            }
            writer.finish()?;
            Ok(())
        };
        match &args.output {
            Some(path) => write_output(path, run)?,
            None => run(&mut BufWriter::with_capacity(1 << 16, io::stdout()))?,
        }
        progress.finish();
        return Ok(());
    };

    // A file: windows go to FILE.partial/ (or, for input that cannot be read again,
    // to a temporary folder), then the file is assembled from them.
    let manifest = manifest(&args, &source, &config.model, model.revision(), &config, window);
    let temporary;
    let (partial, done) = if source.resumable() {
        Partial::open(&final_path, &manifest, args.resume)?
    } else {
        let dir = final_path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(std::path::Path::new("."));
        temporary = tempfile::Builder::new()
            .prefix(".dartboard-embed")
            .tempdir_in(dir)
            .with_context(|| format!("cannot create a temporary folder in {}", dir.display()))?;
        Partial::open(&temporary.path().join("out"), &manifest, false)?
    };
    let already = partial.total_rows(done)?;
    texts.skip(already)?;
    let mut progress = Progress::new(args.quiet, source.count(), already, log_every);
    let mut windows = done;
    let mut embedded = already;
    loop {
        if interrupted.load(Ordering::SeqCst) {
            progress.abandon();
            let message = if source.resumable() {
                format!("interrupted after {embedded} texts; run the same command with --resume to continue")
            } else {
                "interrupted; nothing was written".to_owned()
            };
            return Err(Interrupted(message).into());
        }
        let batch = texts.take(window, MAX_REQUEST_BYTES)?;
        if batch.is_empty() {
            break;
        }
        let refs: Vec<&str> = batch.iter().map(String::as_str).collect();
        let embeddings = truncate(model.encode_with(&refs, args.prompt())?)?;
        partial.write_chunk(windows, dim, embeddings.as_slice(), args.keep_text.then_some(batch.as_slice()))?;
        windows += 1;
        embedded += batch.len() as u64;
        progress.add(batch.len() as u64);
    }

    let total = partial.total_rows(windows)?;
    let read_chunk = |index: u64| -> Result<partial::Chunk> {
        let chunk =
            partial.read_chunk(index)?.with_context(|| format!("window {index} of the partial run is missing"))?;
        if chunk.0 != dim {
            bail!("the partial run has {}-dimensional embeddings but this run gives {dim}", chunk.0);
        }
        Ok(chunk)
    };
    let ranges = match ranges {
        Some(ranges) => Some(ranges),
        // The finishing pass: the run's own ranges, over all of its embeddings. With fewer
        // than two there are none to be had, and quantize_rows says so (no rows: nothing to
        // quantize).
        None if args.precision.needs_ranges() && total >= 2 => {
            let mut builder = RangesBuilder::new(dim);
            for index in 0..windows {
                builder.add_rows(&read_chunk(index)?.1).map_err(anyhow::Error::msg)?;
            }
            if total < 100 && !args.quiet {
                eprintln!(
                    "dartboard: note: {} buckets computed from {total} embeddings; they are steadier from more, or \
                     from --calibration FILE with embeddings of representative texts",
                    args.precision
                );
            }
            Some(builder.finish().map_err(anyhow::Error::msg)?)
        }
        None => None,
    };
    write_output(&final_path, |out| {
        let mut writer = RowWriter::new(args.format, out, element, row_len, total, args.keep_text)?;
        for index in 0..windows {
            let (_, values, texts) = read_chunk(index)?;
            let quantized = quantize_rows(dim, &values, args.precision, ranges.as_ref()).map_err(|e| match e {
                // One embedding in the whole run: say what to do in CLI terms.
                EmbedError::Quantization { .. } if ranges.is_none() => anyhow::Error::new(e)
                    .context("the run has a single embedding; pass --calibration FILE to quantize it"),
                e => e.into(),
            })?;
            writer.write(&Rows { dim: row_len, values: Values::from(quantized.data()), texts: texts.as_deref() })?;
        }
        writer.finish()?;
        Ok(())
    })?;
    partial.remove()?;
    progress.finish();
    Ok(())
}

/// Calibration ranges for `dim` output dimensions: the file's as they are, or, for
/// embeddings of the model's full width, their first `dim` (which is what truncating
/// the calibration embeddings first would give).
fn fit_calibration(
    ranges: QuantizationRanges,
    dim: usize,
    model_dim: usize,
    path: Option<&std::path::Path>,
) -> Result<QuantizationRanges> {
    let name = path.map(|p| p.display().to_string()).unwrap_or_default();
    if ranges.dim() == dim {
        return Ok(ranges);
    }
    if ranges.dim() == model_dim {
        return ranges.truncated(dim).map_err(anyhow::Error::msg);
    }
    bail!(
        "calibration file {name} holds {}-dimensional embeddings, but this run's are {dim}-dimensional (the \
         model's {model_dim}); calibrate with embeddings of the same model",
        ranges.dim()
    )
}

fn manifest(
    args: &EmbedArgs,
    source: &Source,
    model: &str,
    revision: Option<&str>,
    config: &dartboard_config::EmbeddingConfig,
    window: usize,
) -> Manifest {
    let (input, input_bytes, input_modified_ns, input_format, text_field) = match source {
        Source::Input(spec) => {
            let meta = std::fs::metadata(&spec.path).ok();
            let canonical = std::fs::canonicalize(&spec.path).unwrap_or_else(|_| spec.path.clone());
            (
                canonical.display().to_string(),
                meta.as_ref().map(|m| m.len()),
                meta.and_then(|m| m.modified().ok())
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map(|d| d.as_nanos() as u64),
                format!("{:?}", spec.format).to_lowercase(),
                spec.field.clone(),
            )
        }
        Source::Arguments(_) => ("<arguments>".to_owned(), None, None, "arguments".to_owned(), String::new()),
    };
    Manifest {
        version: 1,
        input,
        input_bytes,
        input_modified_ns,
        input_format,
        text_field,
        model: model.to_owned(),
        revision: revision.map(str::to_owned),
        dtype: config.dtype.to_string(),
        device: config.device.to_string(),
        prompt: args.prompt_description(),
        format: format!("{:?}", args.format).to_lowercase(),
        keep_text: args.keep_text,
        window,
        truncate_dim: args.truncate_dim,
        precision: args.precision.to_string(),
    }
}
