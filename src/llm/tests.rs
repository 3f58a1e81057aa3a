//! Reading LLM API requests: detection by path, the fields of each provider's body.

use super::*;

#[test]
fn paths_are_detected_per_provider() {
    use Api::*;
    use LlmProvider::*;
    let cases = [
        ("/v1/chat/completions", Some((Openai, ChatCompletions))),
        (
            "/openai/v1/chat/completions",
            Some((Openai, ChatCompletions)),
        ),
        ("/v1/responses", Some((Openai, Responses))),
        ("/v1/embeddings", Some((Openai, Embeddings))),
        ("/v1/messages", Some((Anthropic, Messages))),
        (
            "/v1beta/models/gemini-2.0-flash:generateContent",
            Some((Gemini, GenerateContent)),
        ),
        (
            "/v1beta/models/g:streamGenerateContent",
            Some((Gemini, StreamGenerateContent)),
        ),
        ("/v1/models", None),
        ("/v1beta/models/g:countTokens", None),
    ];
    for (path, want) in cases {
        assert_eq!(detect(path, None), want, "{path}");
    }
    assert_eq!(detect("/v1/messages", Some(Openai)), None);
}

#[test]
fn openai_chat_fields_are_read() {
    let body = br#"{"model":"gpt-4o-mini","stream":true,"max_completion_tokens":99,
        "messages":[{"role":"user","content":"hi \"usage\""}],
        "tools":[{"type":"function","function":{"name":"get_weather","parameters":{}}},
                 {"type":"web_search"}]}"#;
    let c = LlmCall::parse(
        LlmProvider::Openai,
        Api::ChatCompletions,
        "/v1/chat/completions",
        body,
        false,
    );
    assert_eq!(c.model.as_deref(), Some("gpt-4o-mini"));
    assert!(c.stream);
    assert_eq!(c.max_tokens, Some(99));
    assert_eq!(c.tools, ["get_weather", "web_search"]);
    assert_eq!(c.unreadable, None);
}

#[test]
fn anthropic_and_gemini_fields_are_read() {
    let a = LlmCall::parse(
        LlmProvider::Anthropic,
        Api::Messages,
        "/v1/messages",
        br#"{"model":"claude-3-5-haiku-latest","max_tokens":64,"tools":[{"name":"lookup","input_schema":{}}]}"#,
        false,
    );
    assert_eq!(a.model.as_deref(), Some("claude-3-5-haiku-latest"));
    assert_eq!((a.max_tokens, a.stream), (Some(64), false));
    assert_eq!(a.tools, ["lookup"]);
    let path = "/v1beta/models/gemini-2.0-flash:streamGenerateContent";
    let g = LlmCall::parse(
        LlmProvider::Gemini,
        Api::StreamGenerateContent,
        path,
        br#"{"generationConfig":{"maxOutputTokens":32},"tools":[{"functionDeclarations":[{"name":"f1"},{"name":"f2"}]}]}"#,
        false,
    );
    assert_eq!(g.model.as_deref(), Some("gemini-2.0-flash"));
    assert_eq!((g.max_tokens, g.stream), (Some(32), true));
    assert_eq!(g.tools, ["f1", "f2"]);
}

#[test]
fn an_unreadable_body_is_refused_only_where_bounds_apply() {
    let scope = crate::config::LlmScope {
        models: Some(vec!["gpt-4o-mini".into()]),
        max_tokens: Some(100),
    };
    let bounded = LlmRule::new(None, Some(&scope)).unwrap();
    let open = LlmRule::new(None, None).unwrap();
    let call = |body: &[u8], truncated| {
        LlmCall::parse(
            LlmProvider::Openai,
            Api::ChatCompletions,
            "/v1/chat/completions",
            body,
            truncated,
        )
    };
    let garbage = call(b"not json", false);
    assert!(bounded.check(Some(&garbage)).is_err());
    assert!(open.check(Some(&garbage)).is_ok());
    let cut = call(br#"{"model":"gpt-4o-mini""#, true);
    assert!(
        bounded
            .check(Some(&cut))
            .unwrap_err()
            .contains("inspect_body_bytes")
    );
    let ok = call(br#"{"model":"gpt-4o-mini","max_tokens":100}"#, false);
    assert_eq!(bounded.check(Some(&ok)), Ok(()));
    let big = call(br#"{"model":"gpt-4o-mini","max_tokens":101}"#, false);
    assert!(
        bounded
            .check(Some(&big))
            .unwrap_err()
            .contains("over the bound of 100")
    );
    let unbounded = call(br#"{"model":"gpt-4o-mini"}"#, false);
    assert!(
        bounded
            .check(Some(&unbounded))
            .unwrap_err()
            .contains("no max_tokens")
    );
    let other = call(br#"{"model":"gpt-4o","max_tokens":1}"#, false);
    assert_eq!(
        bounded.check(Some(&other)),
        Err("model 'gpt-4o' is not in scope".into())
    );
    assert_eq!(bounded.check(None), Ok(()));
    assert_eq!(
        bounded.allows(),
        "models: gpt-4o-mini; max_tokens at most 100"
    );
}

#[test]
fn token_series_are_kept_per_metrics_and_labels() {
    use crate::metrics::Metrics;
    use std::sync::Arc;
    let body = br#"{"model":"gpt-4o"}"#;
    let call = LlmCall::parse(LlmProvider::Openai, Api::ChatCompletions, "/", body, false);
    let a = AuditLlm::new(&call, "triage");
    let (m1, m2) = (
        Arc::new(Metrics::new().unwrap()),
        Arc::new(Metrics::new().unwrap()),
    );
    let get = |m: &Metrics, agent: &str, kind: &str| {
        (m.llm_tokens)
            .with_label_values(&[agent, "triage", "gpt-4o", kind])
            .get()
    };
    a.counters(&m1, "bot")[0].inc_by(3);
    a.counters(&m1, "bot")[0].inc_by(4);
    a.counters(&m1, "bot")[1].inc_by(1);
    a.counters(&m1, "other")[0].inc_by(10);
    // Another proxy's metrics on the same thread get their own series.
    a.counters(&m2, "bot")[0].inc_by(5);
    assert_eq!(get(&m1, "bot", "input"), 7);
    assert_eq!(get(&m1, "bot", "output"), 1);
    assert_eq!(get(&m1, "other", "input"), 10);
    assert_eq!(get(&m2, "bot", "input"), 5);
    // More series than a thread keeps: each still counts into its own.
    for _ in 0..2 {
        for i in 0..40 {
            a.counters(&m1, &format!("a{i}"))[1].inc();
        }
    }
    assert!((0..40).all(|i| get(&m1, &format!("a{i}"), "output") == 2));
    assert_eq!(get(&m1, "bot", "input"), 7);
}
