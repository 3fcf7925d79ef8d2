//! php-fpm's own pool status (`pm.status_path?json`): the scrape, cached
//! for a second, and its export as the `phpfpm_*` gauges (`metrics.rs`).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Mutex;

use super::metrics::{self, Pool, StatusPage};
use crate::config::Endpoint;
use crate::supervisor::ChildCounts;

/// Fetches php-fpm's `pm.status_path?json` body from an endpoint.
pub type ScrapeFn = Arc<
    dyn Fn(Endpoint) -> Pin<Box<dyn Future<Output = anyhow::Result<Vec<u8>>> + Send>> + Send + Sync,
>;

/// php-fpm's own pool status, as scraped (its JSON keys).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
pub struct PoolStatus {
    #[serde(default)]
    pub pool: String,
    #[serde(rename = "start since", default)]
    pub start_since: u64,
    #[serde(rename = "accepted conn", default)]
    pub accepted_conn: u64,
    #[serde(rename = "listen queue", default)]
    pub listen_queue: u64,
    #[serde(rename = "max listen queue", default)]
    pub max_listen_queue: u64,
    #[serde(rename = "listen queue len", default)]
    pub listen_queue_len: u64,
    #[serde(rename = "idle processes", default)]
    pub idle_processes: u64,
    #[serde(rename = "active processes", default)]
    pub active_processes: u64,
    #[serde(rename = "total processes", default)]
    pub total_processes: u64,
    #[serde(rename = "max active processes", default)]
    pub max_active_processes: u64,
    #[serde(rename = "max children reached", default)]
    pub max_children_reached: u64,
    #[serde(rename = "slow requests", default)]
    pub slow_requests: u64,
}

impl PoolStatus {
    /// The children counts the one-line summary shows.
    pub fn children(&self) -> ChildCounts {
        ChildCounts {
            total: self.total_processes,
            active: self.active_processes,
            idle: self.idle_processes,
        }
    }
}

/// The status page, scraped at most once a second.
pub struct Scraper {
    scrape: ScrapeFn,
    cache: Mutex<Cache>,
}

struct Cache {
    /// The last scrape, reused for a second so a busy scraper costs php-fpm
    /// at most one status request per second.
    last: Option<(Instant, Option<PoolStatus>)>,
    /// The `pool` label: the status page's name once scraped, the
    /// configured one until then.
    pool: String,
}

impl Scraper {
    pub fn new(scrape: ScrapeFn, pool: &str) -> Self {
        Scraper {
            scrape,
            cache: Mutex::new(Cache {
                last: None,
                pool: pool.to_string(),
            }),
        }
    }

    /// The `pool` label until a scrape names the pool.
    pub fn name_pool(&mut self, pool: &str) {
        self.cache.get_mut().pool = pool.to_string();
    }

    /// php-fpm's pool status from `endpoint`, at most a second old; None
    /// when there is no endpoint (php-fpm not ready) or it did not answer.
    /// Each scrape sets the `phpfpm_*` gauges.
    pub async fn pool_status(&self, endpoint: Option<Endpoint>) -> Option<PoolStatus> {
        let mut cache = self.cache.lock().await;
        if let Some((at, status)) = &cache.last
            && at.elapsed() < Duration::from_secs(1)
        {
            return status.clone();
        }
        let status = match endpoint {
            Some(e) => match (self.scrape)(e).await {
                Ok(body) => serde_json::from_slice::<PoolStatus>(&body)
                    .inspect_err(|err| tracing::debug!(%err, "php-fpm status page did not parse"))
                    .ok(),
                Err(err) => {
                    tracing::debug!(%err, "php-fpm status scrape failed");
                    None
                }
            },
            None => None,
        };
        export(&mut cache.pool, status.as_ref(), metrics::global());
        cache.last = Some((Instant::now(), status.clone()));
        status
    }
}

/// Sets the gauges from a scrape (`None`: it failed), as php-fpm exporters
/// do; a renamed pool's old series are dropped.
fn export(pool: &mut String, status: Option<&PoolStatus>, g: &StatusPage) {
    let Some(s) = status else {
        let label = Pool { pool: pool.clone() };
        g.up.get_or_create(&label).set(0);
        g.scrape_failures.get_or_create(&label).inc();
        return;
    };
    let renamed = !s.pool.is_empty() && *pool != s.pool;
    if renamed {
        pool.clone_from(&s.pool);
    }
    let label = Pool { pool: pool.clone() };
    for (gauge, value) in [
        (&g.up, 1),
        (&g.start_since, s.start_since),
        (&g.accepted_connections, s.accepted_conn),
        (&g.listen_queue, s.listen_queue),
        (&g.max_listen_queue, s.max_listen_queue),
        (&g.listen_queue_length, s.listen_queue_len),
        (&g.idle_processes, s.idle_processes),
        (&g.active_processes, s.active_processes),
        (&g.total_processes, s.total_processes),
        (&g.max_active_processes, s.max_active_processes),
        (&g.max_children_reached, s.max_children_reached),
        (&g.slow_requests, s.slow_requests),
    ] {
        if renamed {
            gauge.clear();
        }
        gauge.get_or_create(&label).set(value as i64);
    }
    if renamed {
        g.scrape_failures.clear();
    }
    let _ = g.scrape_failures.get_or_create(&label);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::registry::fresh;

    #[test]
    fn a_scrape_sets_the_exporters_gauges_and_a_failure_counts() {
        let (g, reg) = fresh::<StatusPage>();
        let mut pool = "www".to_string();
        export(&mut pool, None, g);
        let t = reg.encode();
        assert!(t.contains("phpfpm_up{pool=\"www\"} 0"), "{t}");
        assert!(t.contains("phpfpm_scrape_failures{pool=\"www\"} 1"), "{t}");

        let body = br#"{"pool":"app","start since":42,"accepted conn":9,"listen queue":1,
            "max listen queue":2,"listen queue len":511,"idle processes":3,
            "active processes":1,"total processes":4,"max active processes":4,
            "max children reached":5,"slow requests":6}"#;
        let s: PoolStatus = serde_json::from_slice(body).unwrap();
        export(&mut pool, Some(&s), g);
        let t = reg.encode();
        for line in [
            "phpfpm_up{pool=\"app\"} 1",
            "phpfpm_scrape_failures{pool=\"app\"} 0",
            "phpfpm_start_since{pool=\"app\"} 42",
            "phpfpm_accepted_connections{pool=\"app\"} 9",
            "phpfpm_listen_queue{pool=\"app\"} 1",
            "phpfpm_max_listen_queue{pool=\"app\"} 2",
            "phpfpm_listen_queue_length{pool=\"app\"} 511",
            "phpfpm_idle_processes{pool=\"app\"} 3",
            "phpfpm_active_processes{pool=\"app\"} 1",
            "phpfpm_total_processes{pool=\"app\"} 4",
            "phpfpm_max_active_processes{pool=\"app\"} 4",
            "phpfpm_max_children_reached{pool=\"app\"} 5",
            "phpfpm_slow_requests{pool=\"app\"} 6",
        ] {
            assert!(t.contains(line), "{line} not in:\n{t}");
        }
        assert!(
            !t.contains("pool=\"www\""),
            "the renamed pool is gone:\n{t}"
        );
    }
}
