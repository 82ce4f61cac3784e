//! Unit tests of `secret.rs`.

use super::*;
use crate::contract::resource::OutboundWebhookSpec;

fn hook(uid: &str) -> OutboundWebhook {
    let spec: OutboundWebhookSpec = serde_json::from_value(serde_json::json!({
        "url": "https://example.com", "events": ["kustomer.user.create"]
    }))
    .unwrap();
    let mut hook = OutboundWebhook::new("shop", spec);
    hook.metadata.namespace = Some("acme".into());
    hook.metadata.uid = Some(uid.into());
    hook
}

fn secret(labelled: bool, data: &[(&str, &[u8])], owners: Vec<OwnerReference>) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some("shop-webhook-secret".into()),
            labels: labelled.then(|| BTreeMap::from([(WEBHOOK_SECRET_LABEL.to_string(), "true".to_string())])),
            owner_references: Some(owners),
            ..Default::default()
        },
        data: Some(
            data.iter()
                .map(|(k, v)| (k.to_string(), ByteString(v.to_vec())))
                .collect(),
        ),
        ..Default::default()
    }
}

#[test]
fn a_token_is_64_lowercase_hex_and_fresh_each_time() {
    let a = generate_token().unwrap();
    let b = generate_token().unwrap();
    assert_eq!(a.len(), 64);
    assert!(a.chars().all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c)));
    assert_ne!(a, b);
}

#[test]
fn the_standard_webhooks_form_is_whsec_and_base64_of_the_token_bytes() {
    assert_eq!(standard_webhooks_secret("abc"), "whsec_YWJj");
}

#[test]
fn a_new_secret_is_labelled_named_and_controlled_by_the_hook() {
    let h = hook("uid-1");
    let s = new_secret(&h, "00ff");
    assert_eq!(s.metadata.name.as_deref(), Some("shop-webhook-secret"));
    assert!(has_label(&s));
    let owner = &s.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(owner.controller, Some(true));
    assert_eq!(owner.uid, "uid-1");
    assert_eq!(owner.kind, "OutboundWebhook");
    let data = s.string_data.unwrap();
    assert_eq!(data[TOKEN_KEY], "00ff");
    assert_eq!(data[STANDARD_WEBHOOKS_KEY], standard_webhooks_secret("00ff"));
}

#[test]
fn ownership_tells_own_adoptable_and_foreign_secrets_apart() {
    let h = hook("uid-2");
    let owned_by = |uid: &str, name: &str, kind: &str| {
        let mut r = hook(uid).controller_owner_ref(&()).unwrap();
        r.name = name.into();
        r.kind = kind.into();
        secret(true, &[], vec![r])
    };
    assert_eq!(
        ownership(&owned_by("uid-2", "shop", "OutboundWebhook"), &h),
        Ownership::OwnedByHook
    );
    assert_eq!(
        ownership(&owned_by("uid-1", "shop", "OutboundWebhook"), &h),
        Ownership::AdoptFromDeletedHook
    );
    assert!(matches!(
        ownership(&owned_by("uid-1", "other", "OutboundWebhook"), &h),
        Ownership::Conflict(_)
    ));
    assert!(matches!(
        ownership(&owned_by("uid-1", "shop", "Deployment"), &h),
        Ownership::Conflict(_)
    ));
    let Ownership::Conflict(message) = ownership(&secret(false, &[], vec![]), &h) else {
        panic!("an unowned Secret is a conflict");
    };
    assert!(message.contains("left untouched"), "{message}");
}

#[test]
fn header_secrets_must_exist_be_labelled_and_have_the_key() {
    let reference = SecretKeyRef {
        name: "creds".into(),
        key: "auth".into(),
    };
    let check = |s: Option<&Secret>| check_header_secret(s, "Authorization", &reference, "acme");
    assert_eq!(check(None).unwrap_err().0, "SecretNotFound");
    let (reason, message) = check(Some(&secret(false, &[("auth", b"x")], vec![]))).unwrap_err();
    assert_eq!(reason, "SecretNotLabelled");
    assert!(
        message.contains("header Authorization") && message.contains("kubectl label secret creds"),
        "{message}"
    );
    assert_eq!(
        check(Some(&secret(true, &[("other", b"x")], vec![]))).unwrap_err().0,
        "SecretNotFound"
    );
    assert!(check(Some(&secret(true, &[("auth", b"x")], vec![]))).is_ok());
}

#[test]
fn referenced_secrets_must_exist_be_labelled_and_hold_16_to_512_bytes() {
    let reference = SecretKeyRef {
        name: "mine".into(),
        key: "token".into(),
    };
    let reason = |o: SecretOutcome| match o {
        SecretOutcome::Problem { reason, message } => (reason, message),
        other => ("ok", format!("{other:?}")),
    };
    assert_eq!(
        reason(check_referenced(None, &reference, "acme", false)).0,
        "SecretNotFound"
    );
    let (r, message) = reason(check_referenced(
        Some(&secret(false, &[("token", &[b'a'; 32])], vec![])),
        &reference,
        "acme",
        false,
    ));
    assert_eq!(r, "SecretNotLabelled");
    assert!(
        message.contains("kubectl label secret mine outboundwebhooks.io/webhook-secret=true -n acme"),
        "{message}"
    );
    assert_eq!(
        reason(check_referenced(
            Some(&secret(true, &[("other", &[b'a'; 32])], vec![])),
            &reference,
            "acme",
            false
        ))
        .0,
        "SecretNotFound"
    );
    let (r, message) = reason(check_referenced(
        Some(&secret(true, &[("token", &[b'a'; 15])], vec![])),
        &reference,
        "acme",
        false,
    ));
    assert_eq!(r, "SecretInvalid");
    assert!(
        message.contains("15 bytes") && message.contains("16 to 512"),
        "{message}"
    );
    assert_eq!(
        reason(check_referenced(
            Some(&secret(true, &[("token", &[b'a'; 513])], vec![])),
            &reference,
            "acme",
            false
        ))
        .0,
        "SecretInvalid"
    );
    for len in [16, 512] {
        let ok = check_referenced(
            Some(&secret(true, &[("token", &vec![b'a'; len])], vec![])),
            &reference,
            "acme",
            false,
        );
        assert_eq!(
            ok,
            SecretOutcome::Referenced {
                name: "mine".into(),
                rotation: None
            }
        );
    }
}

#[test]
fn a_referenced_secret_may_hold_next_and_previous_tokens_checked_like_the_token() {
    let reference = SecretKeyRef {
        name: "mine".into(),
        key: "signing".into(),
    };
    let rotating = secret(
        true,
        &[
            ("signing", &[b'a'; 32]),
            (NEXT_TOKEN_KEY, &[b'b'; 32]),
            (PREVIOUS_TOKEN_KEY, &[b'c'; 32]),
        ],
        vec![],
    );
    let SecretOutcome::Referenced {
        rotation: Some(note), ..
    } = check_referenced(Some(&rotating), &reference, "acme", false)
    else {
        panic!("a referenced Secret with rotation keys is usable");
    };
    assert!(
        note.contains("key next-token is present") && note.contains("move it to key signing"),
        "{note}"
    );
    assert!(note.contains("key previous-token is present"), "{note}");
    let bad_next = secret(
        true,
        &[("signing", &[b'a'; 32]), (NEXT_TOKEN_KEY, b"too-short")],
        vec![],
    );
    let SecretOutcome::Problem { reason, message } = check_referenced(Some(&bad_next), &reference, "acme", false)
    else {
        panic!("an unusable next-token is SecretInvalid");
    };
    assert_eq!(reason, "SecretInvalid");
    assert!(
        message.contains("\"next-token\" of Secret mine") && !message.contains("too-short"),
        "{message}"
    );
    let plain = secret(true, &[("signing", &[b'a'; 32])], vec![]);
    let SecretOutcome::Referenced {
        rotation: Some(note), ..
    } = check_referenced(Some(&plain), &reference, "acme", true)
    else {
        panic!("rotation annotations on a secretRef hook are explained");
    };
    assert!(note.contains("act on generated Secrets only"), "{note}");
}

#[test]
fn a_generated_secret_with_an_unusable_rotation_key_is_secret_invalid() {
    let bad = secret(
        true,
        &[(TOKEN_KEY, &[b'a'; 64]), (PREVIOUS_TOKEN_KEY, &[0xff; 64])],
        vec![],
    );
    let SecretOutcome::Problem { reason, message } = generated_outcome(&bad, "shop-webhook-secret") else {
        panic!("an unusable previous-token is SecretInvalid");
    };
    assert_eq!(reason, "SecretInvalid");
    assert!(
        message.contains("previous-token") && message.contains("UTF-8"),
        "{message}"
    );
    let good = secret(true, &[(TOKEN_KEY, &[b'a'; 64]), (NEXT_TOKEN_KEY, &[b'b'; 64])], vec![]);
    assert!(matches!(
        generated_outcome(&good, "shop-webhook-secret"),
        SecretOutcome::Generated { .. }
    ));
    assert_eq!(
        generated_outcome(&secret(true, &[], vec![]), "shop-webhook-secret"),
        missing_key("shop-webhook-secret", TOKEN_KEY)
    );
}

#[test]
fn a_fresh_secret_records_the_hooks_rotate_value_as_done() {
    let mut h = hook("uid-1");
    assert!(new_secret(&h, "00ff").metadata.annotations.is_none());
    h.metadata.annotations = Some(BTreeMap::from([(ROTATE_SECRET_ANNOTATION.into(), "v2".into())]));
    let s = new_secret(&h, "00ff");
    assert_eq!(s.metadata.annotations.unwrap()[PROMOTED_ANNOTATION], "v2");
}
