//! Readiness checks: async closures the host registers, each run with its own timeout.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

type CheckFn =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>> + Send + Sync>;

/// One named readiness check.
#[derive(Clone)]
pub(crate) struct ReadinessCheck {
    name: String,
    timeout: Duration,
    check: CheckFn,
}

impl std::fmt::Debug for ReadinessCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadinessCheck")
            .field("name", &self.name)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl ReadinessCheck {
    /// A check named `name` that fails if `check` errs or takes longer than `timeout`.
    pub(crate) fn new<F, Fut>(
        name: impl Into<String>,
        timeout: Duration,
        check: F,
    ) -> ReadinessCheck
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        ReadinessCheck {
            name: name.into(),
            timeout,
            check: Arc::new(move || Box::pin(check())),
        }
    }
}

/// How one check ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum CheckStatus {
    /// The check returned `Ok`.
    Ok,
    /// The check returned an error.
    Failed,
    /// The check did not finish within its timeout.
    Timeout,
}

/// The result of one check.
#[derive(Debug, Clone, Serialize)]
pub(super) struct CheckResult {
    /// The check's name.
    pub name: String,
    /// How it ended.
    pub status: CheckStatus,
    /// The check's error message, or the timeout.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// How long the check ran, in milliseconds.
    pub duration_ms: f64,
}

/// Runs every check concurrently, each bounded by its own timeout.
pub(super) async fn run_checks(checks: &[ReadinessCheck]) -> Vec<CheckResult> {
    let runs = checks.iter().map(|c| async move {
        let start = Instant::now();
        let outcome = tokio::time::timeout(c.timeout, (c.check)()).await;
        let (status, message) = match outcome {
            Ok(Ok(())) => (CheckStatus::Ok, None),
            Ok(Err(e)) => (CheckStatus::Failed, Some(e)),
            Err(_) => (
                CheckStatus::Timeout,
                Some(format!(
                    "did not finish within {} ms",
                    c.timeout.as_millis()
                )),
            ),
        };
        CheckResult {
            name: c.name.clone(),
            status,
            message,
            duration_ms: start.elapsed().as_secs_f64() * 1e3,
        }
    });
    futures_util::future::join_all(runs).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn checks_report_ok_failed_and_timeout() {
        let checks = vec![
            ReadinessCheck::new("ok", Duration::from_secs(5), || async { Ok(()) }),
            ReadinessCheck::new("bad", Duration::from_secs(5), || async {
                Err("db down".to_string())
            }),
            ReadinessCheck::new("slow", Duration::from_millis(10), || async {
                tokio::time::sleep(Duration::from_secs(60)).await;
                Ok(())
            }),
        ];
        let r = run_checks(&checks).await;
        assert_eq!(r[0].status, CheckStatus::Ok);
        assert_eq!(r[1].status, CheckStatus::Failed);
        assert_eq!(r[1].message.as_deref(), Some("db down"));
        assert_eq!(r[2].status, CheckStatus::Timeout);
    }
}
