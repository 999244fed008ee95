//! `dartboard prefetch` and `dartboard cache ...`: the model store from the shell.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use dartboard_config::{EmbeddingConfig, Overrides};
use dartboard_hub::progress::ConsoleProgress;
use dartboard_hub::{ModelHub, ModelRef};

#[derive(Args)]
pub struct PrefetchArgs {
    /// Models: NAME, ORG/NAME or ORG/NAME@REVISION.
    #[arg(required = true)]
    models: Vec<String>,
    /// Branch, tag or commit for every model given (instead of `main`).
    #[arg(long)]
    revision: Option<String>,
}

#[derive(Subcommand)]
pub enum CacheCommand {
    /// Models in the cache, with revisions and sizes.
    List,
    /// Total size of the cache.
    Size,
    /// Delete a model, or one revision of it, from the cache.
    Rm {
        /// NAME or ORG/NAME (the whole model), or ORG/NAME@REVISION (that revision,
        /// its refs, and the files no other revision uses). Always a cached model,
        /// never a directory.
        model: String,
    },
    /// Re-hash every stored file against the hash it is named by.
    Verify {
        /// Only this model (NAME or ORG/NAME).
        model: Option<String>,
        /// Delete what is corrupt and download it again.
        #[arg(long)]
        repair: bool,
    },
    /// Place a model directory into the cache as ORG/NAME (for offline machines).
    Import {
        /// The model directory.
        dir: PathBuf,
        /// The name to store it under; ORG/NAME@REF also points the branch or tag REF
        /// at it (instead of `main`), and ORG/NAME@<commit hash> records it as that
        /// commit without moving any ref.
        #[arg(long = "as", value_name = "ORG/NAME[@REVISION]")]
        name: String,
        /// Commit hash to record; by default one is derived from the files' hashes.
        #[arg(long)]
        revision: Option<String>,
    },
}

fn hub() -> Result<ModelHub> {
    let config = EmbeddingConfig::load(&Overrides::default())?;
    Ok(ModelHub::from_env(config.cache_dir))
}

pub fn prefetch(args: PrefetchArgs) -> Result<()> {
    let hub = hub()?;
    let progress = ConsoleProgress::new();
    for model in &args.models {
        let parsed = ModelRef::parse_with_revision(model, args.revision.as_deref())?;
        let files = hub.prefetch(&parsed, &progress).with_context(|| format!("cannot prefetch {parsed}"))?;
        println!("{} {} -> {}", parsed, files.revision().unwrap_or("?"), files.dir().display());
    }
    Ok(())
}

pub fn run(command: CacheCommand) -> Result<()> {
    let hub = hub()?;
    let store = hub.store();
    match command {
        CacheCommand::List => {
            println!("cache: {}", store.root().display());
            for repo in store.list()? {
                println!("{}  {}", repo.repo_id, human(repo.size));
                for rev in repo.revisions {
                    let refs = if rev.refs.is_empty() { String::new() } else { format!(" ({})", rev.refs.join(", ")) };
                    println!("  {}{refs}  {} files", rev.commit, rev.files);
                }
            }
        }
        CacheCommand::Size => println!("{}  {}", human(store.total_size()?), store.root().display()),
        CacheCommand::Rm { model } => {
            let removed = store.remove(&model)?;
            match &removed.commit {
                None => println!("removed {} ({})", removed.repo_id, human(removed.freed)),
                Some(commit) => {
                    let refs = if removed.refs.is_empty() {
                        String::new()
                    } else {
                        format!(", refs {}", removed.refs.join(", "))
                    };
                    println!("removed {}@{commit}{refs} ({})", removed.repo_id, human(removed.freed));
                }
            }
        }
        CacheCommand::Verify { model, repair } => {
            let problems = store.verify(model.as_deref())?;
            for p in &problems {
                println!("CORRUPT {}: {} ({})", p.repo_id, p.path.display(), p.detail);
            }
            if problems.is_empty() {
                println!("all files match their hashes");
                return Ok(());
            }
            if !repair {
                bail!(
                    "{} corrupt file(s); run `dartboard cache verify --repair` to download them again",
                    problems.len()
                );
            }
            let progress = ConsoleProgress::new();
            for (repo_id, commit) in store.discard(&problems)? {
                hub.prefetch(&ModelRef::parse(&format!("{repo_id}@{commit}"))?, &progress)
                    .with_context(|| format!("cannot repair {repo_id}@{commit}"))?;
                println!("repaired {repo_id}@{commit}");
            }
            let left = store.verify(model.as_deref())?;
            if !left.is_empty() {
                bail!("{} file(s) still corrupt after repair", left.len());
            }
        }
        CacheCommand::Import { dir, name, revision } => {
            // The name first: a bad one is reported as such, before the directory is read.
            let Some((repo_id, rev)) = ModelRef::parse_hub(&name)?
                .repo_id()
                .map(|id| (id.to_owned(), name.split_once('@').map(|(_, rev)| rev.to_owned())))
            else {
                bail!("--as takes a Hub name such as org/name");
            };
            let rev_is_commit = rev.as_deref().is_some_and(is_commit_hash);
            let commit = match (rev.as_deref().filter(|_| rev_is_commit), revision) {
                (Some(a), Some(b)) if !a.eq_ignore_ascii_case(&b) => {
                    bail!("--as {name} and --revision {b} name two different commits; give one")
                }
                (Some(c), _) => c.to_ascii_lowercase(),
                (None, Some(r)) => r,
                (None, None) => dartboard_hub::content_commit(&dir)?,
            };
            let ref_name = match rev {
                Some(_) if rev_is_commit => None,
                Some(r) => Some(r),
                None => Some("main".to_owned()),
            };
            let files = store.import_dir_at(&dir, &repo_id, &commit, ref_name.as_deref())?;
            let as_ref = ref_name.map(|r| format!(" ({r})")).unwrap_or_default();
            println!("imported {} as {repo_id}@{commit}{as_ref} -> {}", dir.display(), files.dir().display());
        }
    }
    Ok(())
}

fn is_commit_hash(s: &str) -> bool {
    s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}
