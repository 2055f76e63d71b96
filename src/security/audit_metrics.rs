//! The audit log's Prometheus series: records, writes, failures, drops, folded requests. No hash:
//! a hash label would mint a series per record.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;

use super::audit::AuditLog;
use crate::encode::prometheus::Families;

/// `prodbg_audit_*` counters and gauges, read on each scrape.
#[derive(Debug)]
pub(crate) struct AuditCollector(AuditLog);

impl AuditCollector {
    /// Reports `log`'s counters.
    pub(crate) fn new(log: AuditLog) -> AuditCollector {
        AuditCollector(log)
    }
}

impl Collector for AuditCollector {
    fn encode(&self, encoder: DescriptorEncoder) -> std::fmt::Result {
        let s = self.0.stats();
        let mut f = Families::new(encoder);
        f.counter(
            "prodbg_audit_records",
            "Audit records appended since start (requests written one by one and summaries)",
            s.written as f64,
        )?;
        f.counter(
            "prodbg_audit_write_errors",
            "Audit records that could not be written to the audit file",
            s.write_errors as f64,
        )?;
        f.counter(
            "prodbg_audit_queue_dropped",
            "Audit records dropped because the queue to the audit thread was full (a slow or hung audit disk); written as a gap record",
            s.queue_dropped as f64,
        )?;
        f.counter(
            "prodbg_audit_over_budget_requests",
            "Requests of clients past their audit byte budget (4 KiB per client per minute), counted only in over-budget summaries",
            s.over_budget as f64,
        )?;
        f.counter(
            "prodbg_audit_folded_requests",
            "Requests counted in summary records instead of one record each",
            s.folded as f64,
        )?;
        f.gauge(
            "prodbg_audit_keyed",
            "1 when the audit chain is keyed with HMAC-SHA256 (PRODBG_AUDIT_KEY)",
            f64::from(u8::from(s.keyed)),
        )
    }
}
