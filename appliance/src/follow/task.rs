//! The follower's one task: fetch at once, then whenever the poll interval passes or someone
//! asks (`POST /hooks/git`, SIGHUP); each fetch runs on a blocking thread, and a ready commit
//! goes through the daemon's reload path (`serve::Reloader::apply`).

use super::{Cycle, Follower};
use crate::serve::Reloader;
use std::sync::Arc;
use tokio::sync::{watch, Notify};
use tracing::{error, info, warn};

pub async fn run(
    mut follower: Follower,
    trigger: Arc<Notify>,
    reloader: Arc<Reloader>,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let poll = follower.poll();
    loop {
        let serving = reloader.catalog();
        let r = reloader.clone();
        let job = tokio::task::spawn_blocking(move || {
            let cycle = follower.cycle(Some(&serving), &|| r.collect_garbage_blocking());
            (follower, cycle)
        });
        let (f, cycle) = tokio::select! {
            done = job => done?,
            _ = stop.wait_for(|s| *s) => return Ok(()),
        };
        follower = f;
        match cycle {
            Cycle::Unchanged => {}
            Cycle::Ready(ready) => {
                let catalog = reloader.apply(ready.catalog, &ready.report, ready.version).await;
                info!(commit = %ready.commit, summary = %ready.summary, "serving commit");
                let commit = ready.commit;
                follower = tokio::task::spawn_blocking(move || {
                    follower.applied(&commit, &catalog);
                    follower
                })
                .await?;
            }
            Cycle::Refused(refusal) => {
                if follower.refused(&refusal) {
                    if let Some(commit) = &refusal.commit {
                        // Counted in `/metrics` and listed on the status page once, each error
                        // naming the commit (a failed fetch refuses no config: logged only).
                        reloader.refused(refusal.problems.iter().map(|p| format!("commit {commit}: {p}")).collect());
                    }
                    let serving = reloader.catalog().config_source().to_string();
                    match &refusal.commit {
                        Some(commit) => {
                            for p in &refusal.problems {
                                error!(%commit, "{p}");
                            }
                            error!(
                                %commit,
                                problems = refusal.problems.len(),
                                retry = refusal.transient,
                                "commit refused; still serving {serving}"
                            );
                        }
                        None => warn!("git fetch failed: {}; still serving {serving}", refusal.problems.join("; ")),
                    }
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(poll) => {}
            _ = trigger.notified() => info!("fetching the git repository now"),
            _ = stop.wait_for(|s| *s) => return Ok(()),
        }
    }
}
