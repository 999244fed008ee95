//! Progress of a long `dartboard embed`: an indicatif bar on a terminal (texts done,
//! texts/s, ETA), a log line every few seconds otherwise (CI logs, `nohup`, Docker),
//! nothing under `--quiet`.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

pub struct Progress {
    bar: Option<ProgressBar>,
    log_every: Option<Duration>,
    started: Instant,
    last_log: Instant,
    /// Texts done before this process started (a resumed run).
    resumed_from: u64,
    done: u64,
    total: Option<u64>,
}

impl Progress {
    pub fn new(quiet: bool, total: Option<u64>, resumed_from: u64, log_every: Duration) -> Self {
        let now = Instant::now();
        let terminal = std::io::stderr().is_terminal();
        let bar = (!quiet && terminal).then(|| {
            let bar = match total {
                Some(total) => ProgressBar::new(total),
                None => ProgressBar::new_spinner(),
            };
            bar.set_draw_target(ProgressDrawTarget::stderr());
            let template = if total.is_some() {
                "{bar:40} {human_pos}/{human_len} texts, {per_sec}, ETA {eta}"
            } else {
                "{spinner} {human_pos} texts, {per_sec}"
            };
            if let Ok(style) = ProgressStyle::with_template(template) {
                bar.set_style(style);
            }
            bar.set_position(resumed_from);
            bar.reset_eta();
            bar
        });
        let log_every = (!quiet && !terminal).then_some(log_every);
        Progress { bar, log_every, started: now, last_log: now, resumed_from, done: resumed_from, total }
    }

    /// Records `n` more texts done.
    pub fn add(&mut self, n: u64) {
        self.done += n;
        if let Some(bar) = &self.bar {
            bar.inc(n);
        }
        if let Some(every) = self.log_every {
            if self.last_log.elapsed() >= every {
                self.last_log = Instant::now();
                eprintln!("dartboard: {}", self.line());
            }
        }
    }

    fn rate(&self) -> f64 {
        (self.done - self.resumed_from) as f64 / self.started.elapsed().as_secs_f64().max(1e-9)
    }

    fn line(&self) -> String {
        let rate = self.rate();
        match self.total {
            Some(total) if total > 0 => {
                let left = total.saturating_sub(self.done) as f64 / rate.max(1e-9);
                format!(
                    "embedded {}/{total} texts ({:.1}%), {rate:.0} texts/s, ETA {:.0} s",
                    self.done,
                    100.0 * self.done as f64 / total as f64,
                    left
                )
            }
            _ => format!("embedded {} texts, {rate:.0} texts/s", self.done),
        }
    }

    /// The closing line (unless quiet).
    pub fn finish(self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
        if self.bar.is_some() || self.log_every.is_some() {
            let rss = crate::bench::peak_rss_kb().map_or_else(String::new, |kb| format!(", peak RSS {} MB", kb / 1024));
            eprintln!(
                "dartboard: embedded {} texts in {:.1} s ({:.0} texts/s{rss})",
                self.done - self.resumed_from,
                self.started.elapsed().as_secs_f64(),
                self.rate()
            );
        }
    }

    /// Clears the bar before another message.
    pub fn abandon(self) {
        if let Some(bar) = &self.bar {
            bar.abandon();
        }
    }
}
