//! Fair share of the admin server: concurrency caps that one token cannot use up for everyone,
//! small caps for expensive probes, and a bounded pool for their blocking work.
//!
//! The guard takes a [`Permit`] (global + the token's) with [`FairShare::try_admit`]; an
//! expensive probe declares its [`Cap`] with [`FairShare::cap`] and takes it before working. Refusal is
//! immediate (answer 429), never a queue. Anonymous requests (health probes, or a 401 to come)
//! take none: they are cheap and must answer while debug requests fill the caps.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex};

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

/// Which cap refused a request; `Display` is a message for the response body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Busy {
    Global {
        limit: usize,
    },
    Token {
        limit: usize,
    },
    /// The cap of one kind of expensive work, named as in its message ("CPU profiles").
    Probe {
        what: &'static str,
        limit: usize,
    },
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
            Busy::Probe { what, limit } => write!(
                f,
                "{limit} {what} are already running, the limit; retry when one ends"
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
    /// The expensive-work caps, by name, made when a probe declares one.
    caps: Mutex<BTreeMap<&'static str, Arc<Semaphore>>>,
}

/// The cap of one kind of expensive work (CPU profiles, thread dumps …), declared by its probe
/// through [`FairShare::cap`]: a handler takes it before starting the work, so a few of one
/// kind run at once whoever asks. Cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct Cap {
    what: &'static str,
    limit: usize,
    sem: Arc<Semaphore>,
}

impl Cap {
    /// A slot of this cap, held until dropped, or [`Busy`] (a 429) when all are taken.
    pub(crate) fn take(&self) -> Result<OwnedSemaphorePermit, Busy> {
        take(&self.sem).ok_or(Busy::Probe {
            what: self.what,
            limit: self.limit,
        })
    }
}

/// Everything one request holds; dropping it frees all of it.
#[derive(Debug)]
pub(crate) struct Permit {
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
            caps: Mutex::default(),
            limits,
        }
    }

    /// The cap named `what` (plural, as in "2 CPU profiles are already running"): made on first
    /// use with [`FairLimits::per_expensive_probe`] slots; probes declaring the same name share
    /// it.
    pub(crate) fn cap(&self, what: &'static str) -> Cap {
        let limit = self.limits.per_expensive_probe;
        let mut caps = self.caps.lock().unwrap_or_else(|p| p.into_inner());
        let sem = caps
            .entry(what)
            .or_insert_with(|| Arc::new(Semaphore::new(limit)))
            .clone();
        Cap { what, limit, sem }
    }

    /// Admits a request by `token` (the verified token's id; `None` if anonymous), or says
    /// which cap is full. Takes the narrowest cap first, so a refused request never holds a
    /// wider one.
    pub(crate) fn try_admit(&self, token: Option<&str>) -> Result<Permit, Busy> {
        let l = &self.limits;
        let bucket = token
            .and_then(|t| self.tokens.get(t))
            .unwrap_or(&self.other);
        let token_permit = take(bucket).ok_or(Busy::Token { limit: l.per_token })?;
        let global = take(&self.global).ok_or(Busy::Global {
            limit: l.max_concurrent,
        })?;
        Ok(Permit {
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
        let a: Vec<_> = (0..8).map(|_| s.try_admit(Some("a")).unwrap()).collect();
        assert_eq!(
            s.try_admit(Some("a")).unwrap_err(),
            Busy::Token { limit: 8 }
        );
        let b = s.try_admit(Some("b")).unwrap();
        assert_eq!(s.in_flight(), 9);
        drop(a);
        drop(b);
        assert_eq!(s.in_flight(), 0);
        assert!(s.try_admit(Some("a")).is_ok());
    }

    #[test]
    fn global_cap_holds_across_tokens() {
        let s = share();
        let held: Vec<_> = ["a", "b"]
            .iter()
            .flat_map(|t| (0..8).map(|_| s.try_admit(Some(t)).unwrap()))
            .collect();
        assert_eq!(
            s.try_admit(Some("c")).unwrap_err(),
            Busy::Global { limit: 16 }
        );
        drop(held);
        assert!(s.try_admit(Some("c")).is_ok());
    }

    #[test]
    fn expensive_work_has_its_own_caps() {
        let s = share();
        let cpu_cap = s.cap("CPU profiles");
        let cpu: Vec<_> = (0..2).map(|_| cpu_cap.take().unwrap()).collect();
        let refused = s.cap("CPU profiles").take().unwrap_err();
        assert_eq!(
            refused,
            Busy::Probe {
                what: "CPU profiles",
                limit: 2
            }
        );
        assert!(refused
            .to_string()
            .contains("2 CPU profiles are already running"));
        assert_eq!(s.in_flight(), 0, "a cap is apart from the request caps");
        let _heap = s.cap("heap profiles").take().unwrap();
        drop(cpu);
        assert!(cpu_cap.take().is_ok());
    }

    #[test]
    fn anonymous_and_unknown_tokens_share_one_bucket() {
        let s = share();
        let held: Vec<_> = (0..4)
            .map(|_| s.try_admit(None).unwrap())
            .chain((0..4).map(|_| s.try_admit(Some("zzz")).unwrap()))
            .collect();
        assert_eq!(s.try_admit(None).unwrap_err(), Busy::Token { limit: 8 });
        assert!(s.try_admit(Some("a")).is_ok());
        drop(held);
    }
}
