//! Fair share of the admin server: concurrency caps that one token cannot use up for everyone,
//! small caps for expensive probes, and a bounded pool for their blocking work.
//!
//! The guard takes a [`Permit`] (global + the token's) with [`FairShare::try_admit`]; an
//! expensive probe's handler then takes its kind's cap with [`FairShare::probe`]. Refusal is
//! immediate (answer 429), never a queue. Anonymous requests (health probes, or a 401 to come)
//! take none: they are cheap and must answer while debug requests fill the caps.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Limits for [`FairShare`].
#[derive(Debug, Clone)]
pub(crate) struct FairLimits {
    /// Requests answered at once. Default 16.
    pub max_concurrent: usize,
    /// Requests one token may have in flight. Default 8, half of `max_concurrent`: one token
    /// alone can never fill the global cap.
    pub per_token: usize,
    /// Requests in flight per expensive probe kind. Default 2.
    pub per_expensive_probe: usize,
}

impl Default for FairLimits {
    fn default() -> FairLimits {
        FairLimits {
            max_concurrent: 16,
            per_token: 8,
            per_expensive_probe: 2,
        }
    }
}

/// Probes whose cost calls for their own cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Expensive {
    CpuProfile,
    WallProfile,
    HeapProfile,
    ThreadDump,
    TaskDump,
    Bundle,
}

impl Expensive {
    const ALL: [Expensive; 6] = [
        Expensive::CpuProfile,
        Expensive::WallProfile,
        Expensive::HeapProfile,
        Expensive::ThreadDump,
        Expensive::TaskDump,
        Expensive::Bundle,
    ];

    fn index(self) -> usize {
        self as usize
    }

    fn name(self) -> &'static str {
        match self {
            Expensive::CpuProfile => "CPU profiles",
            Expensive::WallProfile => "wall-clock profiles",
            Expensive::HeapProfile => "heap profiles",
            Expensive::ThreadDump => "thread dumps",
            Expensive::TaskDump => "task dumps",
            Expensive::Bundle => "bundles",
        }
    }
}

/// Which cap refused a request; `Display` is a message for the response body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Busy {
    Global { limit: usize },
    Token { limit: usize },
    Probe { probe: Expensive, limit: usize },
}

impl fmt::Display for Busy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Busy::Global { limit } => write!(
                f,
                "the admin server is already answering {limit} requests, its limit; retry shortly"
            ),
            Busy::Token { limit } => write!(
                f,
                "this token already has {limit} requests in flight, its limit; retry when one ends"
            ),
            Busy::Probe { probe, limit } => write!(
                f,
                "{limit} {} are already running, the limit; retry when one ends",
                probe.name()
            ),
        }
    }
}

impl std::error::Error for Busy {}

/// The caps; see the module docs.
#[derive(Debug)]
pub(crate) struct FairShare {
    limits: FairLimits,
    global: Arc<Semaphore>,
    tokens: HashMap<Box<str>, Arc<Semaphore>>,
    /// Shared by anonymous requests and token ids not registered at construction.
    other: Arc<Semaphore>,
    probes: [Arc<Semaphore>; 6],
}

/// Everything one request holds; dropping it frees all of it.
#[derive(Debug)]
pub(crate) struct Permit {
    _probe: Option<OwnedSemaphorePermit>,
    _token: OwnedSemaphorePermit,
    _global: OwnedSemaphorePermit,
}

fn take(sem: &Arc<Semaphore>) -> Option<OwnedSemaphorePermit> {
    sem.clone().try_acquire_owned().ok()
}

impl FairShare {
    /// One per-token cap for each id in `tokens` (the configured tokens' names).
    pub(crate) fn new<'a>(
        limits: FairLimits,
        tokens: impl IntoIterator<Item = &'a str>,
    ) -> FairShare {
        let sem = |n: usize| Arc::new(Semaphore::new(n));
        FairShare {
            global: sem(limits.max_concurrent),
            tokens: tokens
                .into_iter()
                .map(|t| (Box::from(t), sem(limits.per_token)))
                .collect(),
            other: sem(limits.per_token),
            probes: Expensive::ALL.map(|_| sem(limits.per_expensive_probe)),
            limits,
        }
    }

    /// The cap of one expensive probe: a probe's handler takes it before starting the work,
    /// so a few dumps or profiles of one kind run at once whoever asks.
    pub(crate) fn probe(&self, probe: Expensive) -> Result<OwnedSemaphorePermit, Busy> {
        take(&self.probes[probe.index()]).ok_or(Busy::Probe {
            probe,
            limit: self.limits.per_expensive_probe,
        })
    }

    /// Admits a request by `token` (the verified token's id; `None` if anonymous) for
    /// `probe`, or says which cap is full. Takes the narrowest cap first, so a refused request
    /// never holds a wider one.
    pub(crate) fn try_admit(
        &self,
        token: Option<&str>,
        probe: Option<Expensive>,
    ) -> Result<Permit, Busy> {
        let l = &self.limits;
        let probe_permit = match probe {
            Some(p) => Some(take(&self.probes[p.index()]).ok_or(Busy::Probe {
                probe: p,
                limit: l.per_expensive_probe,
            })?),
            None => None,
        };
        let bucket = token
            .and_then(|t| self.tokens.get(t))
            .unwrap_or(&self.other);
        let token_permit = take(bucket).ok_or(Busy::Token { limit: l.per_token })?;
        let global = take(&self.global).ok_or(Busy::Global {
            limit: l.max_concurrent,
        })?;
        Ok(Permit {
            _probe: probe_permit,
            _token: token_permit,
            _global: global,
        })
    }

    #[cfg(test)]
    /// Requests holding a permit now.
    pub(crate) fn in_flight(&self) -> usize {
        self.limits.max_concurrent - self.global.available_permits()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn share() -> FairShare {
        FairShare::new(FairLimits::default(), ["a", "b", "c"])
    }

    #[test]
    fn one_token_cannot_starve_another() {
        let s = share();
        let a: Vec<_> = (0..8)
            .map(|_| s.try_admit(Some("a"), None).unwrap())
            .collect();
        assert_eq!(
            s.try_admit(Some("a"), None).unwrap_err(),
            Busy::Token { limit: 8 }
        );
        let b = s.try_admit(Some("b"), None).unwrap();
        assert_eq!(s.in_flight(), 9);
        drop(a);
        drop(b);
        assert_eq!(s.in_flight(), 0);
        assert!(s.try_admit(Some("a"), None).is_ok());
    }

    #[test]
    fn global_cap_holds_across_tokens() {
        let s = share();
        let held: Vec<_> = ["a", "b"]
            .iter()
            .flat_map(|t| (0..8).map(|_| s.try_admit(Some(t), None).unwrap()))
            .collect();
        assert_eq!(
            s.try_admit(Some("c"), None).unwrap_err(),
            Busy::Global { limit: 16 }
        );
        drop(held);
        assert!(s.try_admit(Some("c"), None).is_ok());
    }

    #[test]
    fn expensive_probes_have_their_own_caps() {
        let s = share();
        let cpu: Vec<_> = (0..2)
            .map(|_| s.try_admit(Some("a"), Some(Expensive::CpuProfile)).unwrap())
            .collect();
        let refused = s
            .try_admit(Some("b"), Some(Expensive::CpuProfile))
            .unwrap_err();
        assert_eq!(
            refused,
            Busy::Probe {
                probe: Expensive::CpuProfile,
                limit: 2
            }
        );
        assert!(refused.to_string().contains("CPU profiles"));
        assert_eq!(s.in_flight(), 2, "a refused request holds nothing");
        let _heap = s
            .try_admit(Some("b"), Some(Expensive::HeapProfile))
            .unwrap();
        let _plain = s.try_admit(Some("b"), None).unwrap();
        drop(cpu);
        assert!(s.try_admit(Some("b"), Some(Expensive::CpuProfile)).is_ok());
    }

    #[test]
    fn anonymous_and_unknown_tokens_share_one_bucket() {
        let s = share();
        let held: Vec<_> = (0..4)
            .map(|_| s.try_admit(None, None).unwrap())
            .chain((0..4).map(|_| s.try_admit(Some("zzz"), None).unwrap()))
            .collect();
        assert_eq!(
            s.try_admit(None, None).unwrap_err(),
            Busy::Token { limit: 8 }
        );
        assert!(s.try_admit(Some("a"), None).is_ok());
        drop(held);
    }
}
