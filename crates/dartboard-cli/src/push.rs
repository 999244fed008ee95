//! `dartboard push`: a model folder or a cached model, committed to a Hub repository
//! (or to the Hub-compatible endpoint `HF_ENDPOINT` names). The work is
//! [`dartboard_hub::ModelHub::push`]'s; this only reads flags and prints the outcome.

use anyhow::{Context, Result};
use clap::Args;
use dartboard_config::{EmbeddingConfig, Overrides};
use dartboard_hub::progress::ConsoleProgress;
use dartboard_hub::{ModelHub, PushOptions};

#[derive(Args)]
#[command(after_help = "\
The token comes from HF_TOKEN, else from the file `hf auth login` writes \
(HF_TOKEN_PATH, else $HF_HOME/token, else ~/.cache/huggingface/token); it needs write access. \
HF_ENDPOINT chooses the server (default https://huggingface.co), e.g. a private mirror.

Large files go through Git LFS (the Hub's HTTP upload path, not Xet). Every file is hashed once \
before it is sent, and the push is refused if one changes before the commit. After the commit the \
repository's file list is read back and every file checked against what was sent.

Examples:
  dartboard push ./my-finetuned-model me/my-model
  dartboard push sentence-transformers/all-MiniLM-L6-v2 mirror/all-MiniLM-L6-v2 --private
  dartboard push ./my-model me/my-model --revision experiment -m \"Second epoch\"")]
pub struct PushArgs {
    /// The model to push: a model folder, or a cached model ORG/NAME[@REVISION] to mirror
    /// (read from the cache, never downloaded).
    source: String,
    /// The repository to push to; it is created when it does not exist.
    #[arg(value_name = "ORG/NAME")]
    repo: String,
    /// The branch to commit to [default: main]; one that does not exist is created from
    /// main. Tags and commit ids are refused: commits go to branches.
    #[arg(long, value_name = "BRANCH")]
    revision: Option<String>,
    /// Create the repository private (when it does not exist yet).
    #[arg(long)]
    private: bool,
    /// The commit message [default: "Upload <folder> with dartboard push", or "Mirror
    /// ORG/NAME@<commit> ..." for a cached model].
    #[arg(long, short = 'm', value_name = "MSG")]
    commit_message: Option<String>,
}

pub fn run(args: PushArgs) -> Result<()> {
    let config = EmbeddingConfig::load(&Overrides::default())?;
    let hub = ModelHub::from_env(config.cache_dir);
    let options = PushOptions { revision: args.revision, private: args.private, commit_message: args.commit_message };
    let pushed = hub
        .push(&args.source, &args.repo, &options, &ConsoleProgress::uploads())
        .with_context(|| format!("cannot push {} to {}", args.source, args.repo))?;
    let target = format!("{}@{}", pushed.repo_id, pushed.branch);
    // The commit id and URL are the server's words: escape control characters so a
    // hostile endpoint cannot drive the terminal.
    let commit = printable(&pushed.commit);
    let mut created = Vec::new();
    if pushed.created_repo {
        created.push("repository");
    }
    if pushed.created_branch {
        created.push("branch");
    }
    if !created.is_empty() {
        println!("created {} {target}", created.join(" and "));
    }
    if pushed.committed {
        println!(
            "pushed {} files to {target} ({} large files uploaded, {} already on the server): commit {}",
            pushed.files, pushed.lfs_uploaded, pushed.lfs_present, commit
        );
    } else {
        println!("{target} already holds these {} files: nothing to commit (commit {commit})", pushed.files);
    }
    println!("{}", printable(&pushed.commit_url));
    Ok(())
}

fn printable(s: &str) -> String {
    s.chars().flat_map(|c| if c.is_control() { c.escape_default().collect::<Vec<_>>() } else { vec![c] }).collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn server_text_cannot_carry_terminal_escapes() {
        assert_eq!(super::printable("abc\u{1b}[2J\n"), "abc\\u{1b}[2J\\n");
        assert_eq!(super::printable("https://hub/x/commit/0a1b"), "https://hub/x/commit/0a1b");
    }
}
