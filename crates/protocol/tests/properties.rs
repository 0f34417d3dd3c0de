//! Property tests for the encodings: canonical JSON is a fixed point, numbers survive the
//! round trip through their text, and key conversions are lossless.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a panic is the failure report"
)]

use oversync_protocol::gcj::{self, Document};
use oversync_protocol::key::{self, LocalKeyKind, SyncKeyKind};
use proptest::prelude::*;
use serde_json::Value;

fn json_string() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z]{0,6}",
        "[<>&\"\\\\/\u{0}-\u{1f}\u{7f}\u{2028}\u{2029}é😀\u{ffff}a-z ]{0,10}",
        any::<String>(),
    ]
}

fn json_number() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |x| x.is_finite())
            .prop_map(Value::from),
        (-1e6f64..1e6).prop_map(Value::from),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        json_number(),
        json_string().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(json_string(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn canonical_json_is_idempotent(value in json_value()) {
        let text = serde_json::to_vec_pretty(&value).unwrap();
        let once = gcj::canonicalize(&text).unwrap();
        let twice = gcj::canonicalize(&once).unwrap();
        prop_assert_eq!(&once, &twice);
    }

    #[test]
    fn canonical_json_of_parsed_canonical_json_is_unchanged(value in json_value()) {
        let canonical = Document::from_serde(&value).to_vec();
        let reparsed = Document::parse(&canonical).unwrap();
        prop_assert_eq!(reparsed.to_vec(), canonical.clone());
        // serde_json agrees that the output is valid JSON with the same structure.
        let back: Value = serde_json::from_slice(&canonical).unwrap();
        prop_assert_eq!(Document::from_serde(&back).to_vec(), canonical);
    }

    #[test]
    fn exact_form_canonicalizes_to_the_gcj_form(value in json_value()) {
        let text = serde_json::to_vec(&value).unwrap();
        let doc = Document::parse(&text).unwrap();
        prop_assert_eq!(gcj::canonicalize(&doc.to_vec_exact()).unwrap(), doc.to_vec());
    }

    #[test]
    fn big_integers_keep_their_digits_in_the_exact_form(n in any::<u64>(), m in any::<i64>()) {
        let text = format!("[{n},{m}]");
        let doc = Document::parse(text.as_bytes()).unwrap();
        prop_assert_eq!(String::from_utf8(doc.to_vec_exact()).unwrap(), text);
    }

    #[test]
    fn written_numbers_parse_back_to_the_same_double(x in any::<f64>().prop_filter("finite", |x| x.is_finite())) {
        let mut out = Vec::new();
        gcj::write_number(x, &mut out);
        let text = String::from_utf8(out).unwrap();
        let back: f64 = text.parse().unwrap();
        prop_assert_eq!(back.to_bits(), x.to_bits(), "{}", text);
        // And GCJ's own parser reads it identically.
        prop_assert_eq!(gcj::canonicalize(text.as_bytes()).unwrap(), text.as_bytes());
    }

    #[test]
    fn uuid_key_bytes_round_trip(bytes in any::<[u8; 16]>()) {
        let text = key::render_uuid(&bytes);
        let stored = key::encode_key_bytes(SyncKeyKind::Uuid, &text).unwrap();
        prop_assert_eq!(&stored[..], &bytes[..]);
        prop_assert_eq!(key::decode_key_bytes(SyncKeyKind::Uuid, &stored).unwrap(), text.clone());
        // Upper case is a different spelling the server refuses but the client accepts.
        let upper = text.to_uppercase();
        if upper != text {
            prop_assert!(key::encode_key_bytes(SyncKeyKind::Uuid, &upper).is_err());
        }
        prop_assert_eq!(key::decode_wire_uuid_strict(&upper), Some(bytes));
        let local = key::local_key_from_wire(LocalKeyKind::UuidBlob, &text).unwrap();
        prop_assert_eq!(key::wire_key_from_local(LocalKeyKind::UuidBlob, &local).unwrap(), text);
    }

    #[test]
    fn gcj_strings_are_escaped_exactly_like_the_go_encoder(text in json_string()) {
        // Two independent writers of Go's string escaping: the table-driven GCJ writer and
        // the serde formatter behind every response body.
        let mut gcj_form = Vec::new();
        gcj::write_string(&text, &mut gcj_form);
        let go_form = oversync_protocol::json::to_compact_vec(&text).unwrap();
        prop_assert_eq!(gcj_form, go_form);
    }

    #[test]
    fn text_key_bytes_round_trip(text in any::<String>()) {
        let stored = key::encode_key_bytes(SyncKeyKind::Text, &text).unwrap();
        prop_assert_eq!(&stored[..], text.as_bytes());
        prop_assert_eq!(key::decode_key_bytes(SyncKeyKind::Text, &stored).unwrap(), text);
    }
}

/// Arbitrary bytes, biased towards JSON-looking input so the parsers get past the first byte.
fn hostile_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        any::<Vec<u8>>(),
        json_value().prop_map(|v| {
            let mut bytes = serde_json::to_vec(&v).unwrap();
            // Truncate or corrupt some of them.
            if bytes.len() > 2 && bytes[0] % 3 == 0 {
                bytes.truncate(bytes.len() / 2);
            }
            bytes
        }),
        "[\\[\\]{}\":,0-9a-z\\\\ .eE+-]{0,64}".prop_map(String::into_bytes),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    /// Request bodies come from the network: every decoder answers with a value or an error,
    /// never a panic.
    #[test]
    fn request_decoders_never_panic_on_hostile_bodies(body in hostile_bytes()) {
        use oversync_protocol::json::{decode_lenient, decode_strict_optional};
        use oversync_protocol::wire::{
            ConnectRequest, PushSessionChunkRequest, PushSessionCreateRequest,
            SnapshotSessionCreateRequest,
        };
        let _ = decode_lenient::<ConnectRequest>(&body);
        let _ = decode_lenient::<PushSessionCreateRequest>(&body);
        let _ = decode_lenient::<PushSessionChunkRequest>(&body);
        let _ = decode_strict_optional::<SnapshotSessionCreateRequest>(&body);
        let _ = gcj::canonicalize(&body);
        let _ = oversync_protocol::error::ErrorBody::decode(&body);
    }

    /// Queries and path segments come from the network too.
    #[test]
    fn query_and_integer_parsers_never_panic(raw in any::<String>()) {
        let query = oversync_protocol::wire::parse_query(&raw);
        let _ = query.get_i64("after_bundle_seq");
        let _ = oversync_protocol::wire::parse_i64_param(&raw);
        let _ = key::decode_local_uuid_lenient(&raw);
        let _ = key::decode_wire_uuid_strict(&raw);
        let _ = oversync_protocol::codec::base64_decode_lenient(&raw);
        let _ = oversync_protocol::codec::bytea_pg_to_wire(&raw);
    }
}
