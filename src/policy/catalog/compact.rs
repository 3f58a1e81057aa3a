//! The compact parts of a compiled rule and intent: a rule's methods as bits, an intent's host
//! index as one sorted array. A 10,000-intent catalog holds 200,000 rules: these keep each to a
//! few allocations.

/// A rule's methods: the standard ones as bits, others (extension methods) by name, uppercase.
/// Bits, not names: a 10,000-intent catalog holds hundreds of thousands of rules.
#[derive(Debug)]
pub(super) struct Methods {
    bits: u16,
    other: Box<[Box<str>]>,
}

/// The standard methods, in the order of `Methods::bits` and of messages.
const STANDARD: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
];

impl Methods {
    /// `names` uppercase.
    pub(super) fn new<'a>(names: impl IntoIterator<Item = &'a str>) -> Self {
        let (mut bits, mut other) = (0, Vec::<Box<str>>::new());
        for m in names {
            match STANDARD.iter().position(|s| *s == m) {
                Some(i) => bits |= 1 << i,
                None if !other.iter().any(|o| &**o == m) => other.push(m.into()),
                None => {}
            }
        }
        Methods {
            bits,
            other: other.into(),
        }
    }

    pub(super) fn contains(&self, method: &str) -> bool {
        let bit = match method {
            "GET" => 0,
            "HEAD" => 1,
            "POST" => 2,
            "PUT" => 3,
            "DELETE" => 4,
            "CONNECT" => 5,
            "OPTIONS" => 6,
            "TRACE" => 7,
            "PATCH" => 8,
            m => return self.other.iter().any(|o| &**o == m),
        };
        self.bits & (1 << bit) != 0
    }

    /// For messages: "GET, POST".
    pub(super) fn names(&self) -> String {
        let standard = STANDARD
            .iter()
            .enumerate()
            .filter(|(i, _)| self.bits & (1 << i) != 0)
            .map(|(_, m)| *m);
        let all: Vec<&str> = standard.chain(self.other.iter().map(|m| &**m)).collect();
        all.join(", ")
    }
}

/// Host name → the rules that name it: (name, rule) pairs sorted by name, found by binary
/// search. No table and no vector per name: a 10,000-intent catalog names 200,000 hosts.
#[derive(Debug, Default)]
pub(super) struct HostIndex(Box<[(Box<str>, usize)]>);

impl HostIndex {
    pub(super) fn new(mut pairs: Vec<(Box<str>, usize)>) -> Self {
        pairs.sort_unstable();
        pairs.dedup();
        HostIndex(pairs.into())
    }

    /// The rules that name `host`, in rule order.
    pub(super) fn get<'a>(&'a self, host: &'a str) -> impl Iterator<Item = usize> + 'a {
        let start = self.0.partition_point(|(h, _)| &**h < host);
        self.0[start..]
            .iter()
            .take_while(move |(h, _)| &**h == host)
            .map(|&(_, i)| i)
    }

    pub(super) fn contains(&self, host: &str) -> bool {
        self.get(host).next().is_some()
    }
}

/// The rules a verdict has checked (see `verdict_with`): the first ones, on the stack.
#[derive(Default)]
pub(super) struct Tried {
    rules: [usize; 8],
    n: usize,
}

impl Tried {
    /// Whether rule `i` is not known to be checked yet; notes it (while there is room).
    pub(super) fn first(&mut self, i: usize) -> bool {
        if self.rules[..self.n].contains(&i) {
            return false;
        }
        if let Some(slot) = self.rules.get_mut(self.n) {
            *slot = i;
            self.n += 1;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_are_kept_as_bits_and_names() {
        let m = Methods::new(["GET", "PURGE", "POST", "GET"]);
        assert!(m.contains("GET") && m.contains("POST") && m.contains("PURGE"));
        assert!(!m.contains("PUT") && !m.contains("get") && !m.contains("PURG"));
        assert_eq!(m.names(), "GET, POST, PURGE");
    }

    #[test]
    fn the_host_index_lists_a_hosts_rules_once_in_rule_order() {
        let pair = |h: &str, i| (Box::<str>::from(h), i);
        let index = HostIndex::new(vec![
            pair("b.example", 3),
            pair("a.example", 0),
            pair("b.example", 1),
            pair("b.example", 3),
            pair("c.example", 2),
        ]);
        assert_eq!(index.get("b.example").collect::<Vec<_>>(), [1, 3]);
        assert_eq!(index.get("a.example").collect::<Vec<_>>(), [0]);
        assert!(index.contains("c.example"));
        assert!(!index.contains("example") && !index.contains("d.example"));
    }
}
