//! Usage read from responses as they pass, split anywhere.

use super::*;

/// An event stream keeps its head here (as an Anthropic one does).
fn run(sse: bool, chunks: &[&[u8]]) -> (Option<u64>, Option<u64>) {
    run_head(sse, sse, chunks)
}

fn run_head(sse: bool, head: bool, chunks: &[&[u8]]) -> (Option<u64>, Option<u64>) {
    let usage = Arc::new(Usage::default());
    let c = IntCounter::new("t", "t").unwrap();
    let mut s = Scanner::new(Arc::clone(&usage), sse, head, [c.clone(), c]);
    for ch in chunks {
        s.data(&Bytes::copy_from_slice(ch));
    }
    s.finish();
    (usage.input(), usage.output())
}

/// Every way to cut `text` in two.
fn every_split(sse: bool, text: &[u8], want: (Option<u64>, Option<u64>)) {
    for i in 0..=text.len() {
        assert_eq!(run(sse, &[&text[..i], &text[i..]]), want, "split at {i}");
    }
}

#[test]
fn openai_stream_usage_is_the_final_chunk() {
    let text = b"data: {\"id\":\"1\",\"choices\":[{\"delta\":{\"content\":\"\\\"usage\\\":{}\"}}],\"usage\":null}\n\n\
data: {\"id\":\"1\",\"choices\":[],\"usage\":{\"prompt_tokens\":11,\"completion_tokens\":7,\"total_tokens\":18}}\n\n\
data: [DONE]\n\n";
    every_split(true, text, (Some(11), Some(7)));
}

#[test]
fn anthropic_stream_usage_is_message_start_then_delta() {
    let text = b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"usage\":{\"input_tokens\":25,\"output_tokens\":1}}}\n\n\
event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"delta\":{\"text\":\"hi\"}}\n\n\
event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":15}}\n\n";
    every_split(true, text, (Some(25), Some(15)));
}

#[test]
fn gemini_and_json_usage_is_read_from_the_tail() {
    let gemini = br#"{"candidates":[{"content":{"parts":[{"text":"x"}]}}],"usageMetadata": {"promptTokenCount": 4, "candidatesTokenCount": 10, "totalTokenCount": 14},"modelVersion":"g"}"#;
    every_split(false, gemini, (Some(4), Some(10)));
    let openai = br#"{"id":"c","choices":[{"message":{"content":"say \"usage\": {\"prompt_tokens\": 1}"}}],"usage":{"prompt_tokens":9,"completion_tokens":3,"completion_tokens_details":{"reasoning_tokens":0}}}"#;
    every_split(false, openai, (Some(9), Some(3)));
    // A long body: only its tail is kept, and the usage is in it.
    let mut long = br#"{"x":""#.to_vec();
    long.extend(std::iter::repeat_n(b'a', 5 * EDGE));
    long.extend_from_slice(br#"","usage":{"input_tokens":2,"output_tokens":5}}"#);
    let chunks: Vec<&[u8]> = long.chunks(1000).collect();
    assert_eq!(run(false, &chunks), (Some(2), Some(5)));
}

#[test]
fn the_settled_callback_gets_the_final_counts_once() {
    use std::sync::atomic::{AtomicU64, Ordering};
    let usage = Arc::new(Usage::default());
    let seen = Arc::new(AtomicU64::new(0));
    let s2 = Arc::clone(&seen);
    usage
        .on_settled(Box::new(move |i, o| {
            s2.fetch_add(i.unwrap_or(0) * 1000 + o.unwrap_or(0), Ordering::Relaxed);
        }))
        .ok()
        .unwrap();
    let c = IntCounter::new("t", "t").unwrap();
    let mut s = Scanner::new(Arc::clone(&usage), true, true, [c.clone(), c]);
    s.data(&Bytes::from_static(
        b"data: {\"usage\":{\"input_tokens\":3,\"output_tokens\":1}}\n",
    ));
    s.data(&Bytes::from_static(
        b"data: {\"usage\":{\"output_tokens\":9}}\n",
    ));
    assert_eq!(seen.load(Ordering::Relaxed), 0, "not before the end");
    s.finish();
    assert_eq!(seen.load(Ordering::Relaxed), 3009);
}

#[test]
fn an_overlong_event_line_is_skipped_and_the_next_read() {
    let mut text = b"data: {\"usage\":{\"prompt_tokens\":1,\"x\":\"".to_vec();
    text.extend(std::iter::repeat_n(b'a', 4 * EDGE));
    text.extend_from_slice(b"\"}}\ndata: {\"usage\":{\"completion_tokens\":4}}\n");
    let chunks: Vec<&[u8]> = text.chunks(4096).collect();
    assert_eq!(run(true, &chunks), (None, Some(4)));
}

#[test]
fn a_line_cut_by_a_frame_is_never_read_from_its_middle() {
    // The last frame may start inside a line that looks like a usage line from there on (here
    // an SSE comment): it is read from the line's real start, so the first line's counts hold.
    let text = b"data: {\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":2}}\n\
: data: {\"usage\":{\"completion_tokens\":99}}\n\n";
    every_split(true, text, (Some(1), Some(2)));
    // Anthropic's input count, from the first frames when `message_start` is cut in two.
    let text =
        b"data: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":25}}}\n\n\
data: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":15}}\n\n";
    let chunks: Vec<&[u8]> = text.chunks(7).collect();
    assert_eq!(run(true, &chunks), (Some(25), Some(15)));
}

#[test]
fn only_a_stream_whose_head_is_kept_reads_its_input_count_there() {
    let text =
        b"data: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":25}}}\n\n\
data: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":15}}\n\n";
    for (i, _) in text.iter().enumerate() {
        let chunks = [&text[..i], &text[i..]];
        assert_eq!(
            run_head(true, true, &chunks),
            (Some(25), Some(15)),
            "split at {i}"
        );
        assert_eq!(
            run_head(true, false, &chunks),
            (None, Some(15)),
            "split at {i}"
        );
    }
}

#[test]
fn frames_of_any_length_keep_the_last_usage_line_whole() {
    // Frames of EDGE bytes or more (kept alone) and shorter ones (kept in a list), mixed, with
    // the usage line across the last two, within the last, or before a short last frame.
    let mut text = b"data: {\"x\":\"".to_vec();
    text.extend(std::iter::repeat_n(b'a', 3 * EDGE));
    text.extend_from_slice(b"\"}\n\n");
    let usage =
        b"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":6}}\n\n";
    let at = text.len();
    text.extend_from_slice(usage);
    text.extend_from_slice(b"data: [DONE]\n\n");
    let want = (Some(5), Some(6));
    for big in [EDGE, EDGE + 1, 2 * EDGE] {
        for split in [at - 3, at, at + 20, at + usage.len(), text.len() - 4] {
            let mut chunks: Vec<&[u8]> = text[..split].chunks(big).collect();
            chunks.push(&text[split..]);
            assert_eq!(run_head(true, false, &chunks), want, "{big} {split}");
            // A short frame between big ones, and big frames after short ones.
            let (a, b) = text[..split].split_at(split - 100);
            let mut chunks: Vec<&[u8]> = a.chunks(big).collect();
            chunks.extend(b.chunks(7));
            chunks.push(&text[split..]);
            assert_eq!(run_head(true, false, &chunks), want, "{big} {split} short");
            let (a, b) = text[..split].split_at(300);
            let mut chunks: Vec<&[u8]> = a.chunks(7).collect();
            chunks.extend(b.chunks(big));
            chunks.push(&text[split..]);
            assert_eq!(
                run_head(true, false, &chunks),
                want,
                "{big} {split} short first"
            );
        }
    }
    // A long last frame that starts inside a line (here an SSE comment that looks like a usage
    // line from there on) is read from its second line: nothing whole holds a usage here.
    let mut text = b"data: {\"x\":\"".to_vec();
    text.extend(std::iter::repeat_n(b'a', EDGE));
    text.extend_from_slice(b"\"}\n\ndata: {\"usage\":{\"prompt_tokens\":1}}\n: ");
    let at = text.len();
    text.extend_from_slice(b"data: {\"usage\":{\"completion_tokens\":99}}\n\ndata: {\"x\":\"");
    text.extend(std::iter::repeat_n(b'a', EDGE));
    text.extend_from_slice(b"\"}\n\ndata: [DONE]\n\n");
    for first in [7, EDGE, at] {
        let mut chunks: Vec<&[u8]> = text[..at].chunks(first).collect();
        chunks.push(&text[at..]);
        assert_eq!(run_head(true, false, &chunks), (None, None), "{first}");
    }
}

#[test]
fn a_responses_stream_is_counted_past_a_tool_schema_with_a_usage_property() {
    // OpenAI's `response.completed` repeats the request's tools: a schema's `usage` property
    // comes before the response's own usage in the same line.
    let text = b"event: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{\"tools\":[{\"type\":\"function\",\"name\":\"t\",\"parameters\":{\"type\":\"object\",\"properties\":{\"usage\":{\"type\":\"string\"}}}}],\"usage\":{\"input_tokens\":12,\"output_tokens\":34,\"total_tokens\":46}}}\n\n";
    every_split(true, text, (Some(12), Some(34)));
}

#[test]
fn the_content_type_is_compared_exactly_first_then_without_parameters_case_blind() {
    for (ct, want) in [
        ("text/event-stream", Some(true)),
        ("application/json", Some(false)),
        ("Text/Event-Stream; charset=utf-8", Some(true)),
        (" application/JSON ;x=y", Some(false)),
        ("text/event-streams", None),
        ("application/jsonl", None),
        ("text/plain", None),
        ("", None),
    ] {
        assert_eq!(event_stream(ct.as_bytes()), want, "{ct}");
    }
}

#[test]
fn the_ring_keeps_the_last_edge_bytes_in_order_whatever_the_frames() {
    let all: Vec<u8> = (0..3 * EDGE + 17).map(|i| (i % 251) as u8).collect();
    for size in [1, 3, 250, 1000, EDGE - 1, EDGE] {
        for total in [10, EDGE - 1, EDGE, EDGE + 1, 2 * EDGE + 5, all.len()] {
            for whole in [false, true] {
                let mut ring = Ring::default();
                let mut cut = false;
                for d in all[..total].chunks(size) {
                    cut |= ring.push(d, whole);
                }
                assert_eq!(cut, total > EDGE, "{size} {total}");
                assert!(ring.bytes.capacity() <= EDGE, "{size} {total}");
                let want = &all[total.saturating_sub(EDGE)..total];
                assert_eq!(ring.in_order(), want, "{size} {total} {whole}");
            }
        }
    }
}

#[test]
fn a_long_stream_of_short_events_is_counted_wherever_the_ring_wraps() {
    // One frame per event, as a stream arrives, after a comment of `pad` bytes: the pads are
    // chosen so that the ring's end falls at every offset of the usage line and of the comment
    // after it, which looks like a usage line from its third byte on (it must not be read from
    // there when the ring's newest bytes start there), and just before and after them.
    let event = b"data: {\"choices\":[{\"delta\":{\"content\":\" word\"}}],\"usage\":null}\n\n";
    let usage =
        b"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":42,\"completion_tokens\":200}}\n\n";
    let comment = b": data: {\"usage\":{\"completion_tokens\":99}}\n";
    let events = 3 * EDGE / event.len();
    // Bytes before the usage line: the pad's comment (`: `, the pad, a newline), the events.
    let before = 3 + events * event.len();
    let last = usage.len() + comment.len();
    let first = (2 * EDGE - last - before % EDGE - 2) % EDGE;
    for pad in first..first + last + 4 {
        let mut frames: Vec<Vec<u8>> = vec![format!(": {}\n", "p".repeat(pad)).into_bytes()];
        frames.extend(std::iter::repeat_n(event.to_vec(), events));
        frames.extend([
            usage.to_vec(),
            comment.to_vec(),
            b"data: [DONE]\n\n".to_vec(),
        ]);
        let chunks: Vec<&[u8]> = frames.iter().map(|f| &f[..]).collect();
        assert_eq!(
            run_head(true, false, &chunks),
            (Some(42), Some(200)),
            "{pad}"
        );
    }
}
