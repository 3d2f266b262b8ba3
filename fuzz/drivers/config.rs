//! The `config` fuzz driver: bytes, read as UTF-8 text, go into [`Config::from_json`], which
//! must never panic; a config it accepts must be valid again and serve every hub.
//!
//! Shared by the `config` fuzz target and by `rocket-server/tests/fuzz_corpus.rs`, which
//! include this file with `#[path]`.

use rocket_proto::{ClientId, Completion, Engine, HashSeed, Message, Operation, Output};
use rocket_proto::{Permissions, Token};
use rocket_server::Config;

/// Parses `data` as a config and, when it is accepted, drives an engine for each hub: every
/// configured user can log in with its secret, and after everyone left the engine is idle.
pub fn run(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let config = match Config::from_json(&text) {
        Ok(config) => config,
        Err(error) => {
            // Error messages are built lazily; building one must not panic either.
            assert!(!error.to_string().is_empty());
            return;
        }
    };
    assert!(!config.hubs.is_empty(), "a valid config has a hub");
    let mut again = config.clone();
    again.validate().expect("a valid config stays valid");
    assert_eq!(again, config, "validation is idempotent");
    for hub in &config.hubs {
        let found = config
            .hub(&hub.path)
            .expect("each hub is found by its path");
        assert_eq!(found, hub, "hub paths are unique");
        let mut engine = Engine::new(&config.engine_config(hub), HashSeed::default());
        let mut outputs = Vec::new();
        for (n, (name, user)) in hub.users.iter().enumerate() {
            assert_eq!(&user.name, name, "a user's name is its key");
            let id = ClientId(n as u64);
            let mut token = [0u8; 16];
            token[..8].copy_from_slice(&(n as u64).to_le_bytes());
            engine
                .handle_connect(id, Token::from_bytes(token))
                .expect("fresh client");
            let request = serde_json::json!({
                "authenticate": { "user": name, "secret": user.secret }
            });
            engine.handle_message(id, Message::Text(&request.to_string()));
            if rocket_proto::config::is_phc(&user.secret) {
                // The frontend verifies PHC secrets; here every secret matches.
                engine.drain_outputs(&mut outputs);
                let op = match outputs.pop() {
                    Some(Output::Start {
                        client,
                        op,
                        operation,
                    }) if client == id => {
                        let Operation::VerifySecret(verification) = *operation else {
                            panic!("expected a verification, got {operation:?}");
                        };
                        assert_eq!(&*verification.phc, user.secret.as_str());
                        assert_eq!(verification.secret, user.secret);
                        op
                    }
                    other => panic!("expected a verification, got {other:?}"),
                };
                engine.handle_completion(op, Completion::SecretVerified(true));
            }
            if user.permission.contains(Permissions::READ) {
                engine.handle_message(id, Message::Text(r#"{"subscribe":{"channel":"c"}}"#));
            }
            engine.drain_outputs(&mut outputs);
            let texts: Vec<&str> = outputs
                .iter()
                .map(|o| match o {
                    Output::Send { client, payload } if *client == id => {
                        payload.as_text().expect("text replies")
                    }
                    other => panic!("unexpected output {other:?}"),
                })
                .collect();
            let value = |text: &str| -> serde_json::Value {
                serde_json::from_str(text).expect("replies are JSON")
            };
            let expected = serde_json::json!({ "authenticated": name });
            assert_eq!(value(texts[1]), expected, "{texts:?}");
            if user.permission.contains(Permissions::READ) {
                let expected = serde_json::json!({ "subscribed": "c" });
                assert_eq!(value(texts[2]), expected, "{texts:?}");
            }
            outputs.clear();
        }
        for n in 0..hub.users.len() {
            engine.handle_disconnect(ClientId(n as u64));
        }
        assert!(engine.is_idle(), "not idle: {engine:?}");
    }
}
