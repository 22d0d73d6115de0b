//! The noisy neighbour: what one principal's flood does to another's paced
//! calls. A quiet principal makes a point lookup, waits for the answer,
//! thinks, and makes the next; first alone, then while a noisy principal
//! keeps `noisy` heavy reads in flight at once, each on a session of its
//! own. Reports the quiet principal's p50/p99 in both runs, their ratio,
//! its failures, and how many heavy reads the noisy one got through.
//!
//! Run it against a server started with fair shares on and with them off
//! (`EROS_DB_FAIR_SHARES`): the difference is what fair shares buy.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rmcp::model::{CallToolRequestParams, ProtocolVersion};
use serde::Serialize;
use serde_json::json;

use crate::client::{self, Handshake, Session};
use crate::stats::{ms, percentile};
use crate::LoadError;

/// What a noisy-neighbour run does.
#[derive(Debug, Clone)]
pub struct NeighboursPlan {
    pub url: String,
    pub noisy_token: String,
    pub quiet_token: String,
    /// Heavy reads the noisy principal keeps in flight.
    pub noisy: usize,
    pub heavy_sql: String,
    pub point_sql: String,
    /// The quiet principal's pause between an answer and its next call.
    pub think: Duration,
    /// How long each of the two measured runs lasts.
    pub duration: Duration,
}

/// The quiet principal's calls in one run.
#[derive(Debug, Clone, Serialize)]
pub struct QuietCalls {
    pub calls: usize,
    pub failures: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// The first failure's text, if any.
    pub first_failure: Option<String>,
}

/// What a run measured.
#[derive(Debug, Clone, Serialize)]
pub struct NeighboursReport {
    pub noisy: usize,
    pub think_ms: f64,
    pub heavy_alone_ms: f64,
    pub solo: QuietCalls,
    pub contended: QuietCalls,
    /// Contended p99 over solo p99.
    pub p99_ratio: f64,
    pub noisy_calls: u64,
    pub noisy_failures: u64,
}

impl std::fmt::Display for NeighboursReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "noisy neighbour: {} heavy reads in flight ({:.1} ms each alone), quiet lookups \
             paced {:.0} ms",
            self.noisy, self.heavy_alone_ms, self.think_ms
        )?;
        for (name, run) in [("solo", &self.solo), ("contended", &self.contended)] {
            writeln!(
                f,
                "  {name:<9} {:>5} calls {:>4} failed  p50 {:>8.2} ms  p99 {:>8.2} ms  max {:>8.2} ms",
                run.calls, run.failures, run.p50_ms, run.p99_ms, run.max_ms
            )?;
        }
        writeln!(
            f,
            "  p99 contended / solo: {:.2}; the noisy principal: {} heavy reads, {} failed",
            self.p99_ratio, self.noisy_calls, self.noisy_failures
        )
    }
}

async fn session(url: &str, token: &str) -> Result<Session, LoadError> {
    let handshake = Handshake::new("eros-bench", "1", ProtocolVersion::V_2025_11_25);
    client::http(url, Some(token), &handshake)
        .await
        .map_err(|err| LoadError::Protocol(err.to_string()))
}

/// One query call: its time, or its failure's text.
async fn timed(session: &Session, sql: &str) -> Result<Duration, String> {
    let started = Instant::now();
    let params = CallToolRequestParams::new("query").with_arguments(
        json!({ "sql": sql })
            .as_object()
            .cloned()
            .unwrap_or_default(),
    );
    match session.call_tool(params).await {
        Ok(result) if result.is_error != Some(true) => Ok(started.elapsed()),
        Ok(result) => Err(result
            .content
            .iter()
            .find_map(|block| block.as_text().map(|text| text.text.clone()))
            .unwrap_or_default()),
        Err(err) => Err(err.to_string()),
    }
}

/// The quiet principal's paced lookups for `duration`.
async fn quiet_run(session: &Session, plan: &NeighboursPlan) -> QuietCalls {
    let mut times = Vec::new();
    let mut failures = Vec::new();
    let until = Instant::now() + plan.duration;
    while Instant::now() < until {
        match timed(session, &plan.point_sql).await {
            Ok(took) => times.push(took),
            Err(why) => failures.push(why),
        }
        tokio::time::sleep(plan.think).await;
    }
    times.sort();
    QuietCalls {
        calls: times.len() + failures.len(),
        failures: failures.len(),
        p50_ms: ms(percentile(&times, 0.5)),
        p99_ms: ms(percentile(&times, 0.99)),
        max_ms: ms(times.last().copied().unwrap_or_default()),
        first_failure: failures.into_iter().next(),
    }
}

pub async fn run(plan: &NeighboursPlan) -> Result<NeighboursReport, LoadError> {
    let quiet = session(&plan.url, &plan.quiet_token).await?;
    let mut noisy_sessions = Vec::with_capacity(plan.noisy);
    for _ in 0..plan.noisy {
        noisy_sessions.push(Arc::new(session(&plan.url, &plan.noisy_token).await?));
    }
    // Warm both: connections open, statements cached.
    for _ in 0..3 {
        let _ = timed(&quiet, &plan.point_sql).await;
    }
    let heavy_alone = timed(&noisy_sessions[0], &plan.heavy_sql)
        .await
        .map_err(LoadError::Protocol)?;
    let solo = quiet_run(&quiet, plan).await;
    // The quiet principal's solo calls must not count as activity that
    // holds a share for it when the flood starts.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let mut flood = Vec::new();
    for session in &noisy_sessions {
        let (session, stop, done, failed) = (
            Arc::clone(session),
            Arc::clone(&stop),
            Arc::clone(&done),
            Arc::clone(&failed),
        );
        let sql = plan.heavy_sql.clone();
        flood.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                match timed(&session, &sql).await {
                    Ok(_) => done.fetch_add(1, Ordering::Relaxed),
                    Err(_) => failed.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }
    tokio::time::sleep(heavy_alone * 2 + Duration::from_millis(200)).await;
    let contended = quiet_run(&quiet, plan).await;
    stop.store(true, Ordering::Relaxed);
    for task in flood {
        let _ = task.await;
    }
    for session in noisy_sessions {
        if let Ok(session) = Arc::try_unwrap(session) {
            let _ = session.cancel().await;
        }
    }
    let _ = quiet.cancel().await;
    Ok(NeighboursReport {
        noisy: plan.noisy,
        think_ms: ms(plan.think),
        heavy_alone_ms: ms(heavy_alone),
        p99_ratio: if solo.p99_ms > 0.0 {
            contended.p99_ms / solo.p99_ms
        } else {
            0.0
        },
        solo,
        contended,
        noisy_calls: done.load(Ordering::Relaxed),
        noisy_failures: failed.load(Ordering::Relaxed),
    })
}
