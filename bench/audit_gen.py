#!/usr/bin/env python3
"""Writes a synthetic fleet audit log (JSON lines, the audit log's own format) for measuring
`intentgate report`: N records over a day from AGENTS agents, each with a few intents and
destinations, ~3% denied, ~2% would-deny (monitor agents), ~1% refused before the policy.

    python3 bench/audit_gen.py --records 1000000 --out /tmp/audit.jsonl
    /usr/bin/time -v target/release/intentgate report --audit /tmp/audit.jsonl --out /tmp/r.html
"""
import argparse
import random

INTENTS = ["triage-tickets", "summarise-docs", "deploy-preview", "billing-lookup", "crm-sync",
           "search-web", "code-review", "oncall-digest"]
HOSTS = ["api.zendesk.com", "api.github.com", "slack.com", "api.stripe.com", "docs.internal.example",
         "search.example.org", "api.openai.com", "storage.googleapis.com", "hooks.example.net",
         "login.example.com", "pastebin.com", "203.0.113.7"]
REASONS = ["{m} {h}{p} is not allowed for intent {i}", "host {h} is not in intent {i}",
           "intent {i} may not be claimed by this agent"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--agents", type=int, default=200)
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=7)
    a = ap.parse_args()
    rnd = random.Random(a.seed)
    agents = []
    for n in range(a.agents):
        ns = f"team-{n % 17}"
        owner = "null" if n % 23 == 0 else f'"team-{n % 17}-lead"'
        expires = '"2026-12-01T00:00:00Z"' if n % 31 == 0 else '"2027-06-30T00:00:00Z"'
        agent = (f'{{"id":"agent-{n:03d}","namespace":"{ns}","spiffe_id":"spiffe://cluster.local/ns/{ns}/sa/agent-{n:03d}",'
                 f'"service_account":"agent-{n:03d}","owner":{owner},"expires":{expires}}}')
        intents = rnd.sample(INTENTS, 2)
        mode = "monitor" if n % 5 == 0 else "enforce"
        agents.append((agent, intents, mode))
    start = 1_764_979_200  # 2025-12-06T00:00:00Z
    step = 86_400 / a.records
    import datetime
    with open(a.out, "w", buffering=1 << 20) as out:
        for seq in range(a.records):
            agent, intents, mode = agents[rnd.randrange(len(agents))]
            intent = intents[rnd.randrange(2)]
            host = HOSTS[rnd.randrange(len(HOSTS))]
            method = "GET" if rnd.random() < 0.7 else "POST"
            path = f"/api/v2/items/{rnd.randrange(100000)}"
            t = start + seq * step
            ts = datetime.datetime.fromtimestamp(t, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            x = rnd.random()
            extra = ""
            reasons = "[]"
            status = 200
            if x < 0.03 or (mode == "monitor" and x < 0.05):
                decision = "would_deny" if mode == "monitor" else "deny"
                r = REASONS[rnd.randrange(len(REASONS))].format(m=method, h=host, p=path, i=intent)
                reasons = f'["{r}"]'
                extra = ',"code":"intent_violation"'
                status = 200 if mode == "monitor" else 403
            elif x < 0.06:
                decision = "error"
                extra = ',"error":"destination_blocked"'
                reasons = '["destination is a private address"]'
                status = 403
            else:
                decision = "allow"
            out.write(
                f'{{"time":"{ts}","seq":{seq},"boot_id":"9c1f00aa00bb00cc","decision_id":"ad64a969{seq:016x}",'
                f'"agent":{agent},"intent":{{"name":"{intent}","task":"INC-{seq % 9999}","source":"header","verified":false}},'
                f'"connection":"intercepted","method":"{method}","scheme":"https","host":"{host}","port":443,'
                f'"path":"{path}","decision":"{decision}","mode":"{mode}","reasons":{reasons}{extra},'
                f'"policy_revision":"3d31c624d2702c23","status":{status},"bytes_in":0,"bytes_out":5120,'
                f'"durations":{{"policy_us":21,"upstream_ms":38.2,"total_ms":39.0}}}}\n')


if __name__ == "__main__":
    main()
