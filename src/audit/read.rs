//! Audit records read back from their JSON lines (`learn`, the `run` summary): typed, as they
//! were written. A line that is not JSON is an error naming its file and line; JSON that is not
//! an audit record (missing fields, a word no version wrote) is counted and skipped.

use std::path::Path;

use super::AuditRecord;

/// The records of one or more audit logs.
#[derive(Debug, Default)]
pub struct AuditLog {
    pub records: Vec<AuditRecord>,
    /// JSON lines that are not audit records.
    pub unreadable: usize,
}

impl AuditLog {
    /// Reads the records of `files`, in order.
    pub fn read(files: &[impl AsRef<Path>]) -> Result<Self, String> {
        let mut log = AuditLog::default();
        for f in files {
            let f = f.as_ref();
            let text = std::fs::read_to_string(f)
                .map_err(|e| format!("{}: cannot read: {e}", f.display()))?;
            log.add_lines(&text, &f.display().to_string())?;
        }
        Ok(log)
    }

    /// Adds the records of `text` (JSON lines; blank lines skipped), read from `file`.
    pub fn add_lines(&mut self, text: &str, file: &str) -> Result<(), String> {
        let lines = text.lines().enumerate();
        for (i, line) in lines.filter(|(_, l)| !l.trim().is_empty()) {
            match serde_json::from_str::<AuditRecord>(line) {
                Ok(r) => self.records.push(r),
                Err(e) if e.classify() == serde_json::error::Category::Data => {
                    self.unreadable += 1;
                }
                Err(e) => return Err(format!("{file}:{}: not an audit record: {e}", i + 1)),
            }
        }
        Ok(())
    }

    /// Only the records this process wrote (its `boot_id`); unreadable lines are nobody's.
    pub fn of_this_process(self) -> Self {
        let boot = format!("{:016x}", crate::ids::boot_id());
        let mut records = self.records;
        records.retain(|r| r.boot_id == boot);
        AuditLog {
            records,
            unreadable: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vocab::{ConnectionMode, ErrorCode, Verdict};

    #[test]
    fn records_read_typed_non_records_are_counted_and_broken_json_is_an_error() {
        let mut log = AuditLog::default();
        let text = "{\"method\":\"GET\",\"host\":\"h\",\"port\":443,\"decision\":\"allow\",\
                    \"connection\":\"intercepted\",\"error\":\"upstream_tls\",\"extra\":1}\n\n\
                    {\"not\":\"a record\"}\n\
                    {\"method\":\"GET\",\"host\":\"h\",\"port\":443,\"decision\":\"maybe\"}\n\
                    [1]\n";
        log.add_lines(text, "a.log").unwrap();
        assert_eq!((log.records.len(), log.unreadable), (1, 3));
        let r = &log.records[0];
        assert_eq!(
            (r.decision, r.connection, r.error),
            (
                Some(Verdict::Allow),
                Some(ConnectionMode::Intercepted),
                Some(ErrorCode::UpstreamTls)
            )
        );
        let e = log
            .add_lines("{\"method\": \"GET\"\n", "b.log")
            .unwrap_err();
        assert!(e.starts_with("b.log:1: not an audit record"), "{e}");
    }

    #[test]
    fn a_record_says_what_became_of_its_call() {
        use crate::audit::Outcome;
        let mut log = AuditLog::default();
        let rec = |decision: &str, error: &str, method: &str, status: u16| {
            let error = if error.is_empty() {
                String::new()
            } else {
                format!(",\"error\":\"{error}\"")
            };
            format!(
                "{{\"method\":\"{method}\",\"host\":\"h\",\"port\":443,\"decision\":\"{decision}\",\
                 \"connection\":\"intercepted\",\"status\":{status}{error}}}\n"
            )
        };
        let cases = [
            (rec("allow", "", "GET", 200), Outcome::Allowed, false),
            (
                rec("allow", "policy_error", "GET", 200),
                Outcome::Allowed,
                false,
            ),
            (
                rec("would_deny", "", "GET", 200),
                Outcome::WouldBlock,
                false,
            ),
            (
                rec("allow", "upstream_tls", "GET", 502),
                Outcome::Failed,
                false,
            ),
            (
                rec("allow", "overloaded", "GET", 503),
                Outcome::Blocked,
                false,
            ),
            (
                rec("deny", "port_not_in_scope", "GET", 403),
                Outcome::Blocked,
                false,
            ),
            (
                rec("error", "destination_forbidden", "GET", 403),
                Outcome::Blocked,
                false,
            ),
            (rec("allow", "", "CONNECT", 200), Outcome::Allowed, true),
            (
                rec("deny", "port_not_in_scope", "CONNECT", 200),
                Outcome::Blocked,
                true,
            ),
            (
                rec("allow", "overloaded", "CONNECT", 503),
                Outcome::Blocked,
                false,
            ),
        ];
        for (line, _, _) in &cases {
            log.add_lines(line, "t.log").unwrap();
        }
        assert_eq!(log.records.len(), cases.len());
        for (r, (line, outcome, opened)) in log.records.iter().zip(&cases) {
            assert_eq!(
                (r.outcome(), r.opened_tunnel()),
                (*outcome, *opened),
                "{line}"
            );
        }
    }
}
