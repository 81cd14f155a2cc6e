//! Owns the end-to-end tests of the built plugin components: each first-party factor's
//! enrolment and challenge flows, the imports each needs, and the test corpus's behaviour.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;

use concierge_plugin_harness::{
    EnrollStep, FUEL, Form, Grant, HttpBody, HttpError, HttpResponse, Plugin, PluginError,
    SecretRef, Verdict, dist, http_response, user,
};
use totp_rs::{Algorithm, Builder, Secret};

const ALL: &[Grant] = &[
    Grant::Clock,
    Grant::Random,
    Grant::State,
    Grant::Email,
    Grant::Sms,
    Grant::Log,
    Grant::Http,
];

fn load(file: &str, grants: &[Grant]) -> Plugin {
    Plugin::load(file, grants).unwrap()
}

/// The first run of `digits` ASCII digits in `text`.
fn code_in(text: &str, digits: usize) -> String {
    text.as_bytes()
        .windows(digits)
        .find(|w| w.iter().all(u8::is_ascii_digit))
        .map(|w| String::from_utf8(w.to_vec()).unwrap())
        .unwrap_or_else(|| panic!("no {digits}-digit code in {text:?}"))
}

fn other_code(code: &str) -> String {
    code.chars()
        .map(|c| char::from(b'0' + (c as u8 - b'0' + 1) % 10))
        .collect()
}

fn field_names(form: &Form) -> Vec<&str> {
    form.fields.iter().map(|f| f.name.as_str()).collect()
}

#[test]
fn every_component_describes_itself() {
    for (file, id) in [
        ("totp.wasm", "totp"),
        ("email-otp.wasm", "email-otp"),
        ("sms-otp.wasm", "sms-otp"),
        ("privacyidea.wasm", "privacyidea"),
        ("template.wasm", "template"),
        ("examples/security-question.wasm", "security-question"),
        ("test/test-http-v2.wasm", "test-http"),
        ("test/test-sdk-http.wasm", "test-sdk-http"),
        ("test/hostile-loop.wasm", "hostile-loop"),
        ("test/hostile-memhog.wasm", "hostile-memhog"),
        ("test/hostile-trap.wasm", "hostile-trap"),
        ("test/hostile-ungranted.wasm", "hostile-ungranted"),
        ("test/hostile-malformed.wasm", "BAD ID!"),
        ("test/test-factor-v1.wasm", "test-factor"),
        ("test/test-factor-v2.wasm", "test-factor"),
    ] {
        let description = load(file, ALL).describe().unwrap();
        assert_eq!(description.id, id, "{file}");
    }
}

#[test]
fn each_component_loads_with_exactly_the_grants_it_uses() {
    let needs: &[(&str, &[Grant])] = &[
        (
            "totp.wasm",
            &[Grant::Clock, Grant::Random, Grant::State, Grant::Log],
        ),
        (
            "email-otp.wasm",
            &[Grant::Clock, Grant::Random, Grant::State, Grant::Email],
        ),
        (
            "sms-otp.wasm",
            &[Grant::Clock, Grant::Random, Grant::State, Grant::Sms],
        ),
        (
            "template.wasm",
            &[Grant::Clock, Grant::Random, Grant::State],
        ),
        (
            "examples/security-question.wasm",
            &[Grant::Clock, Grant::Random, Grant::State],
        ),
        ("privacyidea.wasm", &[Grant::Http]),
        ("test/test-http-v2.wasm", &[Grant::Http]),
        ("test/test-sdk-http.wasm", &[Grant::Http]),
        ("test/hostile-ungranted.wasm", &[Grant::Sms]),
        ("test/test-factor-v1.wasm", &[]),
        ("test/hostile-loop.wasm", &[]),
    ];
    for (file, grants) in needs {
        assert!(Plugin::load(file, grants).is_ok(), "{file} with {grants:?}");
        for left_out in grants.iter() {
            let fewer: Vec<Grant> = grants.iter().copied().filter(|g| g != left_out).collect();
            assert!(
                Plugin::load(file, &fewer).is_err(),
                "{file} loaded without {left_out:?}"
            );
        }
    }
}

fn totp_for(secret_b32: &str, algorithm: Algorithm, digits: u8) -> totp_rs::Totp {
    let secret = Secret::try_from_base32(secret_b32).unwrap();
    Builder::new()
        .with_algorithm(algorithm)
        .with_digits(digits)
        .with_secret(secret)
        .build()
        .unwrap()
}

#[test]
fn totp_enrols_then_accepts_each_time_step_once() {
    let mut p = load(
        "totp.wasm",
        &[Grant::Clock, Grant::Random, Grant::State, Grant::Log],
    );
    let ana = user("en");
    assert!(!p.is_enrolled(&ana).unwrap());
    assert!(matches!(
        p.challenge_begin(&ana).unwrap(),
        Err(PluginError::NotEnrolled)
    ));

    let form = p.enroll_begin(&ana).unwrap().unwrap();
    let secret = form.secret.clone().unwrap();
    assert_eq!(secret.len(), 32, "20 bytes in base32");
    let qr = form.qr.clone().unwrap();
    assert_eq!(
        qr,
        format!(
            "otpauth://totp/Concierge:ana%40example.com?secret={secret}&issuer=Concierge\
             &algorithm=SHA1&digits=6&period=30"
        )
    );
    assert_eq!(field_names(&form), ["code"]);
    let totp = totp_for(&secret, Algorithm::SHA1, 6);

    let now = p.host.now as u64;
    let code = totp.generate(now).to_string();
    let wrong = p
        .enroll_finish(&ana, &[("code", &other_code(&code))])
        .unwrap();
    assert!(matches!(wrong, Err(PluginError::BadInput(_))), "{wrong:?}");
    assert!(
        !p.is_enrolled(&ana).unwrap(),
        "not enrolled by a wrong code"
    );
    let malformed = p.enroll_finish(&ana, &[("code", "12ab56")]).unwrap();
    assert!(matches!(malformed, Err(PluginError::BadInput(_))));
    assert!(matches!(
        p.enroll_finish(&ana, &[("code", &code)]).unwrap(),
        Ok(EnrollStep::Done)
    ));
    assert!(p.is_enrolled(&ana).unwrap());
    assert_eq!(p.host.logs, ["Level::Info: enrolled"]);

    // The enrolment code's step is used.
    let replay = p.verify(&ana, &[("code", &code)]).unwrap().unwrap();
    assert!(
        matches!(replay, Verdict::Rejected(ref m) if m.en.contains("already used")),
        "{replay:?}"
    );

    let form = p.challenge_begin(&ana).unwrap().unwrap();
    assert_eq!(field_names(&form), ["code"]);
    assert!(form.qr.is_none() && form.secret.is_none());
    p.host.now += 30;
    let next = totp.generate(p.host.now as u64).to_string();
    let spaced = format!("{} {}", &next[..3], &next[3..]);
    assert!(matches!(
        p.verify(&ana, &[("code", &spaced)]).unwrap(),
        Ok(Verdict::Accepted)
    ));
    assert!(matches!(
        p.verify(&ana, &[("code", &next)]).unwrap(),
        Ok(Verdict::Rejected(_))
    ));
    // One step late still works (skew), for a step not used yet.
    p.host.now += 60;
    let late = totp.generate(p.host.now as u64 - 30).to_string();
    assert!(matches!(
        p.verify(&ana, &[("code", &late)]).unwrap(),
        Ok(Verdict::Accepted)
    ));
    // Two steps old does not.
    let old = totp.generate(p.host.now as u64 - 60).to_string();
    if old != late {
        assert!(matches!(
            p.verify(&ana, &[("code", &old)]).unwrap(),
            Ok(Verdict::Rejected(_))
        ));
    }
}

#[test]
fn totp_follows_its_config_and_keeps_an_enrolment_s_parameters() {
    let mut p = load(
        "totp.wasm",
        &[Grant::Clock, Grant::Random, Grant::State, Grant::Log],
    );
    p.host.config.insert("algorithm".into(), "SHA256".into());
    p.host.config.insert("digits".into(), "8".into());
    p.host.config.insert("issuer".into(), "Example Corp".into());
    let ana = user("ko");
    let form = p.enroll_begin(&ana).unwrap().unwrap();
    let qr = form.qr.unwrap();
    assert!(
        qr.starts_with("otpauth://totp/Example%20Corp:ana%40example.com?"),
        "{qr}"
    );
    assert!(
        qr.ends_with("&issuer=Example%20Corp&algorithm=SHA256&digits=8&period=30"),
        "{qr}"
    );
    assert!(form.intro.ko.contains("8자리"), "{}", form.intro.ko);
    let totp = totp_for(&form.secret.unwrap(), Algorithm::SHA256, 8);
    let code = totp.generate(p.host.now as u64).to_string();
    assert!(matches!(
        p.enroll_finish(&ana, &[("code", &code)]).unwrap(),
        Ok(EnrollStep::Done)
    ));
    // A later config change does not touch the enrolled secret.
    p.host.config.insert("digits".into(), "6".into());
    p.host.now += 30;
    let code = totp.generate(p.host.now as u64).to_string();
    assert!(matches!(
        p.verify(&ana, &[("code", &code)]).unwrap(),
        Ok(Verdict::Accepted)
    ));
    // An unknown value fails closed.
    p.host.config.insert("algorithm".into(), "MD5".into());
    assert!(matches!(
        p.enroll_begin(&ana).unwrap(),
        Err(PluginError::Internal(_))
    ));
}

#[test]
fn email_otp_sends_a_code_that_works_once() {
    let mut p = load(
        "email-otp.wasm",
        &[Grant::Clock, Grant::Random, Grant::State, Grant::Email],
    );
    let ana = user("ko");
    assert!(p.is_enrolled(&ana).unwrap());
    let form = p.challenge_begin(&ana).unwrap().unwrap();
    assert!(
        form.intro.en.contains("a•••@example.com"),
        "{}",
        form.intro.en
    );
    assert_eq!(p.host.emails.len(), 1);
    let (subject, body) = p.host.emails[0].clone();
    assert!(subject.contains("로그인 인증 코드"), "{subject}");
    let code = code_in(&body, 6);

    // A reload within resend_seconds sends nothing new.
    p.host.now += 5;
    p.challenge_begin(&ana).unwrap().unwrap();
    assert_eq!(p.host.emails.len(), 1);

    assert!(matches!(
        p.verify(&ana, &[("code", &other_code(&code))]).unwrap(),
        Ok(Verdict::Rejected(_))
    ));
    assert!(matches!(
        p.verify(&ana, &[("code", "abc")]).unwrap(),
        Err(PluginError::BadInput(_))
    ));
    assert!(matches!(
        p.verify(&ana, &[("code", &code)]).unwrap(),
        Ok(Verdict::Accepted)
    ));
    let again = p.verify(&ana, &[("code", &code)]).unwrap().unwrap();
    assert!(
        matches!(again, Verdict::Rejected(ref m) if m.en.contains("No code")),
        "{again:?}"
    );
    assert!(p.host.state.is_empty());
}

#[test]
fn email_otp_codes_expire_and_burn_after_too_many_wrong_answers() {
    let mut p = load(
        "email-otp.wasm",
        &[Grant::Clock, Grant::Random, Grant::State, Grant::Email],
    );
    p.host.config.insert("max_attempts".into(), "2".into());
    let ana = user("en");
    p.challenge_begin(&ana).unwrap().unwrap();
    let code = code_in(&p.host.emails[0].1, 6);
    assert!(p.host.emails[0].1.contains("10 minutes"));
    p.host.now += 600;
    let expired = p.verify(&ana, &[("code", &code)]).unwrap().unwrap();
    assert!(
        matches!(expired, Verdict::Rejected(ref m) if m.en.contains("expired")),
        "{expired:?}"
    );

    p.challenge_begin(&ana).unwrap().unwrap();
    let code = code_in(&p.host.emails[1].1, 6);
    let wrong = other_code(&code);
    assert!(matches!(
        p.verify(&ana, &[("code", &wrong)]).unwrap(),
        Ok(Verdict::Rejected(_))
    ));
    let burnt = p.verify(&ana, &[("code", &wrong)]).unwrap().unwrap();
    assert!(
        matches!(burnt, Verdict::Rejected(ref m) if m.en.contains("Too many")),
        "{burnt:?}"
    );
    assert!(matches!(
        p.verify(&ana, &[("code", &code)]).unwrap(),
        Ok(Verdict::Rejected(_))
    ));

    // A failed send leaves nothing behind, so the next try sends at once.
    p.host.now += 1;
    p.host.send_failure = Some("smtp down".into());
    assert!(matches!(
        p.challenge_begin(&ana).unwrap(),
        Err(PluginError::Unavailable(_))
    ));
    assert!(p.host.state.is_empty());
    p.host.send_failure = None;
    p.challenge_begin(&ana).unwrap().unwrap();
    assert_eq!(p.host.emails.len(), 3);
}

#[test]
fn sms_otp_enrols_a_proved_number_then_texts_codes_to_it() {
    let mut p = load(
        "sms-otp.wasm",
        &[Grant::Clock, Grant::Random, Grant::State, Grant::Sms],
    );
    let ana = user("en");
    assert!(!p.is_enrolled(&ana).unwrap());
    let form = p.enroll_begin(&ana).unwrap().unwrap();
    assert_eq!(field_names(&form), ["phone"]);
    assert!(matches!(
        p.enroll_finish(&ana, &[("phone", "010-1234-5678")])
            .unwrap(),
        Err(PluginError::BadInput(_))
    ));
    let step = p
        .enroll_finish(&ana, &[("phone", "+82 10-1234-5678")])
        .unwrap()
        .unwrap();
    let EnrollStep::Next(code_form) = step else {
        panic!("expected a code page")
    };
    assert_eq!(field_names(&code_form), ["code"]);
    assert!(
        code_form.intro.en.contains("+82••••••5678"),
        "{}",
        code_form.intro.en
    );
    assert_eq!(p.host.sms.len(), 1);
    assert_eq!(p.host.sms[0].0, "+821012345678");
    let enrol_code = code_in(&p.host.sms[0].1, 6);
    // Another number right away is refused (no texting spree).
    assert!(matches!(
        p.enroll_finish(&ana, &[("phone", "+821099998888")])
            .unwrap(),
        Err(PluginError::BadInput(_))
    ));
    assert!(matches!(
        p.enroll_finish(&ana, &[("code", &other_code(&enrol_code))])
            .unwrap(),
        Err(PluginError::BadInput(_))
    ));
    assert!(!p.is_enrolled(&ana).unwrap());
    assert!(matches!(
        p.enroll_finish(&ana, &[("code", &enrol_code)]).unwrap(),
        Ok(EnrollStep::Done)
    ));
    assert!(p.is_enrolled(&ana).unwrap());

    // The enrolment code does not sign in.
    assert!(matches!(
        p.verify(&ana, &[("code", &enrol_code)]).unwrap(),
        Ok(Verdict::Rejected(_))
    ));
    p.challenge_begin(&ana).unwrap().unwrap();
    assert_eq!(p.host.sms.len(), 2);
    assert_eq!(p.host.sms[1].0, "+821012345678");
    assert!(
        p.host.sms[1].1.starts_with("Concierge code: "),
        "{}",
        p.host.sms[1].1
    );
    let code = code_in(&p.host.sms[1].1, 6);
    assert!(matches!(
        p.verify(&ana, &[("code", &code)]).unwrap(),
        Ok(Verdict::Accepted)
    ));
    assert!(matches!(
        p.verify(&ana, &[("code", &code)]).unwrap(),
        Ok(Verdict::Rejected(_))
    ));
}

/// The template's component: plugins/dist/template.wasm, or the file `CONCIERGE_TEMPLATE_COMPONENT`
/// names, whose id is `CONCIERGE_TEMPLATE_ID` (plugins/tools/out-of-tree.sh runs this test on a
/// copy built outside the repository as docs/plugins.md says).
fn template_component() -> PathBuf {
    std::env::var_os("CONCIERGE_TEMPLATE_COMPONENT")
        .map_or_else(|| dist().join("template.wasm"), PathBuf::from)
}

#[test]
fn template_enrols_a_pin_and_checks_it() {
    let file = template_component();
    eprintln!("template component: {}", file.display());
    assert!(
        Plugin::from_file(&file, &[Grant::Random, Grant::State]).is_err(),
        "loads without clock"
    );
    let mut p = Plugin::from_file(&file, &[Grant::Clock, Grant::Random, Grant::State]).unwrap();
    let id = std::env::var("CONCIERGE_TEMPLATE_ID").unwrap_or_else(|_| "template".into());
    assert_eq!(p.describe().unwrap().id, id);
    let ana = user("en");
    assert!(!p.is_enrolled(&ana).unwrap());
    assert!(matches!(
        p.verify(&ana, &[("pin", "246810")]).unwrap(),
        Err(PluginError::NotEnrolled)
    ));
    p.enroll_begin(&ana).unwrap().unwrap();
    assert!(matches!(
        p.enroll_finish(&ana, &[("pin", "123")]).unwrap(),
        Err(PluginError::BadInput(_))
    ));
    assert!(matches!(
        p.enroll_finish(&ana, &[("pin", "246810")]).unwrap(),
        Ok(EnrollStep::Done)
    ));
    assert!(p.is_enrolled(&ana).unwrap());
    let form = p.challenge_begin(&ana).unwrap().unwrap();
    assert_eq!(field_names(&form), ["pin"]);
    assert!(matches!(
        p.verify(&ana, &[("pin", "246810")]).unwrap(),
        Ok(Verdict::Accepted)
    ));
    assert!(matches!(
        p.verify(&ana, &[("pin", "246811")]).unwrap(),
        Ok(Verdict::Rejected(_))
    ));
    // config: a longer minimum PIN, and a value out of range fails closed.
    p.host.config.insert("min_length".into(), "8".into());
    assert!(matches!(
        p.enroll_finish(&ana, &[("pin", "246810")]).unwrap(),
        Err(PluginError::BadInput(_))
    ));
    p.host.config.insert("min_length".into(), "40".into());
    assert!(matches!(
        p.enroll_begin(&ana).unwrap(),
        Err(PluginError::Internal(_))
    ));
}

#[test]
fn hostile_calls_fail_and_the_host_survives() {
    let ana = user("en");
    for file in [
        "test/hostile-loop.wasm",
        "test/hostile-memhog.wasm",
        "test/hostile-trap.wasm",
    ] {
        let mut p = load(file, &[]);
        assert!(p.challenge_begin(&ana).unwrap().is_ok(), "{file}");
        let outcome = p.verify(&ana, &[("code", "123456")]);
        let error = outcome.err().map(|e| format!("{e:?}")).unwrap_or_default();
        eprintln!(
            "{file}: verify failed as it should: {}",
            error.lines().next().unwrap_or("")
        );
        assert!(!error.is_empty(), "{file}: verify did not fail");
        // The next call gets a fresh instance and works.
        assert!(p.describe().is_ok(), "{file}");
    }
}

#[test]
fn hostile_malformed_returns_what_the_host_must_refuse() {
    let mut p = load("test/hostile-malformed.wasm", &[]);
    let description = p.describe().unwrap();
    assert_eq!(description.id, "BAD ID!");
    assert!(description.name.en.len() >= 100_000);
    let form = p.challenge_begin(&user("en")).unwrap().unwrap();
    assert!(field_names(&form).contains(&"Bad Name!"));
}

#[test]
fn test_factor_versions_differ_in_intro_and_answer() {
    let ana = user("en");
    for (file, version, right, wrong) in [
        ("test/test-factor-v1.wasm", "version 1", "111111", "222222"),
        ("test/test-factor-v2.wasm", "version 2", "222222", "111111"),
    ] {
        let mut p = load(file, &[]);
        let form = p.challenge_begin(&ana).unwrap().unwrap();
        assert!(
            form.intro.en.contains(version) && form.intro.ko.contains(version),
            "{file}"
        );
        assert!(matches!(
            p.verify(&ana, &[("code", right)]).unwrap(),
            Ok(Verdict::Accepted)
        ));
        assert!(matches!(
            p.verify(&ana, &[("code", wrong)]).unwrap(),
            Ok(Verdict::Rejected(_))
        ));
    }
}

#[test]
fn security_question_enrols_a_hashed_answer_and_checks_it_with_a_lock() {
    let mut p = load(
        "examples/security-question.wasm",
        &[Grant::Clock, Grant::Random, Grant::State],
    );
    let ana = user("ko");
    let description = p.describe().unwrap();
    assert_eq!(description.amr, ["kba"]);
    assert!(description.needs_enrollment);
    assert!(!p.is_enrolled(&ana).unwrap());
    assert!(matches!(
        p.challenge_begin(&ana).unwrap(),
        Err(PluginError::NotEnrolled)
    ));
    assert!(matches!(
        p.verify(&ana, &[("answer", "busan")]).unwrap(),
        Err(PluginError::NotEnrolled)
    ));

    let form = p.enroll_begin(&ana).unwrap().unwrap();
    assert_eq!(field_names(&form), ["question", "answer"]);
    assert!(
        form.intro
            .en
            .contains(" 2. Your mother's city of birth? 3."),
        "{}",
        form.intro.en
    );
    assert!(
        form.intro.ko.contains("1. 처음 다닌 학교"),
        "{}",
        form.intro.ko
    );
    for bad in [
        [("question", "4"), ("answer", "busan")],
        [("question", "0"), ("answer", "busan")],
        [("question", "Too short"), ("answer", "busan")],
        [("question", "2"), ("answer", "  ab  ")],
    ] {
        let refused = p.enroll_finish(&ana, &bad).unwrap();
        assert!(
            matches!(refused, Err(PluginError::BadInput(_))),
            "{bad:?}: {refused:?}"
        );
    }
    assert!(!p.is_enrolled(&ana).unwrap());
    assert!(matches!(
        p.enroll_finish(&ana, &[("question", "2"), ("answer", "  Busan ")])
            .unwrap(),
        Ok(EnrollStep::Done)
    ));
    assert!(p.is_enrolled(&ana).unwrap());
    let kept: Vec<u8> = p.host.state.values().flatten().copied().collect();
    assert!(
        !kept.windows(5).any(|w| w.eq_ignore_ascii_case(b"busan")),
        "the answer is kept hashed"
    );

    let form = p.challenge_begin(&ana).unwrap().unwrap();
    assert_eq!(form.intro.en, "Your mother's city of birth?");
    assert_eq!(form.intro.ko, "어머니의 출생지는?");
    assert_eq!(field_names(&form), ["answer"]);
    assert!(matches!(
        p.verify(&ana, &[("answer", "BUSAN")]).unwrap(),
        Ok(Verdict::Accepted)
    ));
    // 1,000 SHA-256 rounds fit the default budget with room to spare.
    eprintln!("security-question verify: {} fuel", p.last_fuel);
    assert!(p.last_fuel > 0 && p.last_fuel < FUEL / 4, "{}", p.last_fuel);

    // Five wrong answers in a row lock it; then even the right one is refused unchecked.
    for n in 1..=5 {
        let wrong = p.verify(&ana, &[("answer", "seoul")]).unwrap().unwrap();
        let Verdict::Rejected(message) = wrong else {
            panic!("wrong answer {n} accepted")
        };
        assert_eq!(
            message.en.contains("Too many"),
            n == 5,
            "{n}: {}",
            message.en
        );
    }
    let locked = p.verify(&ana, &[("answer", "busan")]).unwrap().unwrap();
    assert!(
        matches!(locked, Verdict::Rejected(ref m) if m.en.contains("15 minutes")),
        "{locked:?}"
    );
    p.host.now += 15 * 60;
    assert!(matches!(
        p.verify(&ana, &[("answer", "busan")]).unwrap(),
        Ok(Verdict::Accepted)
    ));

    // A question of one's own is shown as written, in both languages.
    let own = "Where did we first meet?";
    assert!(matches!(
        p.enroll_finish(&ana, &[("question", own), ("answer", "Jeju")])
            .unwrap(),
        Ok(EnrollStep::Done)
    ));
    let form = p.challenge_begin(&ana).unwrap().unwrap();
    assert_eq!((form.intro.en.as_str(), form.intro.ko.as_str()), (own, own));
    assert!(matches!(
        p.verify(&ana, &[("answer", "busan")]).unwrap(),
        Ok(Verdict::Rejected(_))
    ));
    assert!(matches!(
        p.verify(&ana, &[("answer", "jeju")]).unwrap(),
        Ok(Verdict::Accepted)
    ));
}

#[test]
fn a_contract_0_2_component_gets_the_fake_http_the_test_controls() {
    let file = "test/test-http-v2.wasm";
    assert!(Plugin::load(file, &[]).is_err(), "loads without http");
    let mut p = load(file, &[Grant::Http]);
    let ana = user("en");
    let answer = [
        ("url", "https://pi.example/validate/check"),
        ("secret", "pi-credential"),
        ("secret_field", "pass"),
    ];
    p.host
        .http_responses
        .push_back(http_response(200, "accept"));
    p.host.http_responses.push_back(http_response(403, "no"));
    p.host
        .http_responses
        .push_back(Err(HttpError::Failed("connection refused".into())));

    assert!(matches!(
        p.verify(&ana, &answer).unwrap(),
        Ok(Verdict::Accepted)
    ));
    let request = &p.host.http_requests[0];
    assert_eq!(
        (request.method.as_str(), request.url.as_str()),
        ("POST", "https://pi.example/validate/check")
    );
    let HttpBody::Form(fields) = &request.body else {
        panic!("not a form: {:?}", request.body)
    };
    assert!(matches!(&fields[0], (k, SecretRef::Literal(v)) if k == "user" && v == "alice"));
    assert!(
        matches!(&fields[1], (k, SecretRef::Secret(name)) if k == "pass" && name == "pi-credential"),
        "the secret goes by name: {fields:?}"
    );

    let refused = p.verify(&ana, &answer).unwrap().unwrap();
    assert!(
        matches!(refused, Verdict::Rejected(ref m) if m.en.contains("status 403")),
        "{refused:?}"
    );
    let failed = p.verify(&ana, &answer).unwrap();
    assert!(
        matches!(failed, Err(PluginError::Unavailable(ref m)) if m.contains("connection refused")),
        "{failed:?}"
    );
    let unanswered = p.verify(&ana, &answer).unwrap();
    assert!(
        matches!(unanswered, Err(PluginError::Unavailable(ref m)) if m.contains("no canned response")),
        "{unanswered:?}"
    );
    assert_eq!(p.host.http_requests.len(), 4);
}

#[test]
fn an_sdk_factor_on_contract_0_2_posts_a_form_with_a_named_secret_and_reads_json() {
    let mut p = load("test/test-sdk-http.wasm", &[Grant::Http]);
    p.host
        .config
        .insert("url".into(), "https://pi.example/validate/check".into());
    let ana = user("en");
    assert!(!p.describe().unwrap().needs_enrollment);
    assert_eq!(
        field_names(&p.challenge_begin(&ana).unwrap().unwrap()),
        ["code"]
    );
    assert!(matches!(
        p.verify(&ana, &[("code", "12a456")]).unwrap(),
        Err(PluginError::BadInput(_))
    ));
    assert!(
        p.host.http_requests.is_empty(),
        "a malformed code sends nothing"
    );

    let pi = |status: bool, value: bool| {
        http_response(
            200,
            &format!(r#"{{"result": {{"status": {status}, "value": {value}}}, "detail": {{}}}}"#),
        )
    };
    p.host.http_responses.push_back(pi(true, true));
    p.host.http_responses.push_back(pi(true, false));
    p.host.http_responses.push_back(pi(false, true));
    p.host
        .http_responses
        .push_back(http_response(502, "<html>bad gateway</html>"));
    p.host.http_responses.push_back(Err(HttpError::Timeout));
    assert!(matches!(
        p.verify(&ana, &[("code", "123 456")]).unwrap(),
        Ok(Verdict::Accepted)
    ));
    let request = &p.host.http_requests[0];
    assert_eq!(request.method, "POST");
    assert_eq!(request.url, "https://pi.example/validate/check");
    assert!(
        matches!(&request.headers[..], [(name, SecretRef::Secret(secret))]
            if name == "authorization" && secret == "service-credential"),
        "{:?}",
        request.headers
    );
    let HttpBody::Form(fields) = &request.body else {
        panic!("not a form: {:?}", request.body)
    };
    assert!(
        matches!(&fields[..], [(u, SecretRef::Literal(id)), (c, SecretRef::Literal(code))]
            if u == "user" && id == "u-1" && c == "pass" && code == "123456"),
        "{fields:?}"
    );
    for (what, expected) in [
        ("value false", "rejected"),
        ("status false", "rejected"),
        ("not JSON", "not JSON"),
        ("timeout", "timeout"),
    ] {
        let outcome = p.verify(&ana, &[("code", "123456")]).unwrap();
        let seen = match &outcome {
            Ok(Verdict::Rejected(_)) => "rejected".to_owned(),
            Err(PluginError::Unavailable(m)) => m.clone(),
            other => format!("{other:?}"),
        };
        assert!(seen.contains(expected), "{what}: {outcome:?}");
    }
    p.host.config.clear();
    assert!(matches!(
        p.verify(&ana, &[("code", "123456")]).unwrap(),
        Err(PluginError::Internal(_))
    ));
    assert_eq!(p.host.http_requests.len(), 5);
}

/// A privacyIDEA answer as 3.14 writes it (abridged: tests/peers/privacyidea/README.md).
fn pi_answer(value: bool, message: &str) -> Result<HttpResponse, HttpError> {
    let auth = if value { "ACCEPT" } else { "REJECT" };
    http_response(
        200,
        &format!(
            r#"{{"jsonrpc": "2.0", "result": {{"status": true, "value": {value}, "authentication": "{auth}"}},
                "detail": {{"message": "{message}", "serial": "TOTP-ANA", "type": "totp"}},
                "version": "privacyIDEA 3.14", "signature": "rsa_sha256_pss:00"}}"#
        ),
    )
}

/// How a verify ended, in a word: `accepted`, `rejected: <en text>`, `unavailable: <reason>` …
fn outcome(p: &mut Plugin, code: &str) -> String {
    match p.verify(&user("en"), &[("code", code)]).unwrap() {
        Ok(Verdict::Accepted) => "accepted".into(),
        Ok(Verdict::Rejected(m)) => format!("rejected: {}", m.en),
        Err(PluginError::Unavailable(m)) => format!("unavailable: {m}"),
        Err(PluginError::BadInput(m)) => format!("bad input: {}", m.en),
        Err(PluginError::Internal(m)) => format!("internal: {m}"),
        Err(PluginError::NotEnrolled) => "not enrolled".into(),
    }
}

#[test]
fn privacyidea_names_the_user_by_an_upstream_claim_when_told() {
    let mut p = load("privacyidea.wasm", &[Grant::Http]);
    p.host
        .config
        .insert("validate_url".into(), "https://pi.example/validate/check".into());
    p.host
        .config
        .insert("user_name".into(), "claim:employee_id".into());
    let sent_user = |p: &Plugin| -> Option<String> {
        let HttpBody::Form(fields) = &p.host.http_requests.last()?.body else {
            return None;
        };
        fields.iter().find_map(|(k, v)| match v {
            SecretRef::Literal(v) if k == "user" => Some(v.clone()),
            _ => None,
        })
    };
    // Without the claim (a password sign-in, or not granted): no request, fails closed.
    assert_eq!(outcome(&mut p, "123456"), "unavailable: no such claim");
    assert!(p.host.http_requests.is_empty());
    // With it: the claim's value is the user name, whatever the email says.
    p.host.claims.insert("employee_id".into(), "e-1042".into());
    p.host
        .http_responses
        .push_back(pi_answer(true, "matching 1 tokens"));
    assert_eq!(outcome(&mut p, "123456"), "accepted");
    assert_eq!(sent_user(&p).as_deref(), Some("e-1042"));
    // Another claim of the user is not what was asked for.
    p.host.claims.clear();
    p.host.claims.insert("upn".into(), "ana@corp".into());
    assert_eq!(outcome(&mut p, "123456"), "unavailable: no such claim");
    assert_eq!(p.host.http_requests.len(), 1);
}

#[test]
fn privacyidea_posts_the_code_with_a_named_credential_and_reads_the_verdict() {
    let mut p = load("privacyidea.wasm", &[Grant::Http]);
    let url = "https://pi.example/validate/check";
    p.host.config.insert("validate_url".into(), url.into());
    let ana = user("ko");
    let description = p.describe().unwrap();
    assert!(!description.needs_enrollment);
    assert_eq!(description.amr, ["otp"]);
    assert!(p.is_enrolled(&ana).unwrap());
    let form = p.challenge_begin(&ana).unwrap().unwrap();
    assert_eq!(field_names(&form), ["code"]);
    assert!(
        p.host.http_requests.is_empty(),
        "the challenge sends nothing"
    );

    // Accepted: the form privacyIDEA expects, the credential by name in `authorization`.
    p.host
        .http_responses
        .push_back(pi_answer(true, "matching 1 tokens"));
    assert!(matches!(
        p.verify(&ana, &[("code", "123 456")]).unwrap(),
        Ok(Verdict::Accepted)
    ));
    let request = &p.host.http_requests[0];
    assert_eq!(
        (request.method.as_str(), request.url.as_str()),
        ("POST", url)
    );
    assert!(
        matches!(&request.headers[..], [(name, SecretRef::Secret(secret))]
            if name == "authorization" && secret == "pi-credential"),
        "{:?}",
        request.headers
    );
    let HttpBody::Form(fields) = &request.body else {
        panic!("not a form: {:?}", request.body)
    };
    let literal = |fields: &[(String, SecretRef)]| -> Vec<(String, String)> {
        fields
            .iter()
            .map(|(k, v)| match v {
                SecretRef::Literal(v) => (k.clone(), v.clone()),
                SecretRef::Secret(name) => panic!("{k} carries the secret {name}"),
            })
            .collect()
    };
    assert_eq!(
        literal(fields),
        [
            ("user".to_owned(), "ana@example.com".to_owned()),
            ("pass".to_owned(), "123456".to_owned())
        ]
    );

    // Rejected: a wrong code, a replayed one (its own message, in the user's language).
    p.host
        .http_responses
        .push_back(pi_answer(false, "wrong otp value"));
    let Ok(Verdict::Rejected(wrong)) = p.verify(&ana, &[("code", "654321")]).unwrap() else {
        panic!("a wrong code passed")
    };
    p.host
        .http_responses
        .push_back(pi_answer(false, "wrong otp value. previous otp used again"));
    let Ok(Verdict::Rejected(used)) = p.verify(&ana, &[("code", "123456")]).unwrap() else {
        panic!("a replayed code passed")
    };
    assert!(wrong.en.contains("not correct"), "{wrong:?}");
    assert!(used.en.contains("already used"), "{used:?}");
    assert!(!wrong.ko.is_empty() && !used.ko.is_empty() && wrong.ko != used.ko);
    p.host
        .http_responses
        .push_back(pi_answer(false, "The user has no tokens assigned"));
    assert!(outcome(&mut p, "123456").starts_with("rejected: That code is not correct"));

    // Anything but a 200 with a boolean result.value fails closed (unavailable).
    let cases = [
        (
            http_response(
                403,
                r#"{"result": {"status": false, "error": {"code": 303, "message": "No valid API key was passed."}}, "detail": null}"#,
            ),
            "unavailable: privacyIDEA answered 403",
        ),
        // A 403 that says yes is still a 403.
        (
            http_response(403, r#"{"result": {"status": true, "value": true}}"#),
            "unavailable: privacyIDEA answered 403",
        ),
        (
            http_response(
                400,
                r#"{"result": {"status": false, "error": {"code": 904, "message": "ERR904: User <ana@concierge> does not exist."}}}"#,
            ),
            "unavailable: privacyIDEA answered 400",
        ),
        (
            http_response(302, ""),
            "unavailable: privacyIDEA answered 302",
        ),
        (
            http_response(200, r#"{"result": {"status": true, "value": tru"#),
            "unavailable: http: the answer is not JSON",
        ),
        (
            http_response(200, "<html>maintenance</html>"),
            "unavailable: http: the answer is not JSON",
        ),
        (
            http_response(200, r#"{"result": {"status": true, "value": "true"}}"#),
            "unavailable: privacyIDEA: no result.value",
        ),
        (
            http_response(
                200,
                r#"{"result": {"status": true}, "detail": {"message": "matching 1 tokens"}}"#,
            ),
            "unavailable: privacyIDEA: no result.value",
        ),
        (Err(HttpError::Timeout), "unavailable: http timeout"),
        (
            Err(HttpError::Failed("connection refused".into())),
            "unavailable: http failed: connection refused",
        ),
    ];
    for (response, expected) in cases {
        p.host.http_responses.push_back(response);
        let seen = outcome(&mut p, "123456");
        assert!(seen.starts_with(expected), "{expected}: {seen}");
    }

    // A malformed code sends nothing; 8 digits are sent as typed.
    let sent = p.host.http_requests.len();
    for typed in ["12345", "1234567", "12a456", "", "123456789"] {
        assert!(outcome(&mut p, typed).starts_with("bad input"), "{typed:?}");
    }
    assert_eq!(
        p.host.http_requests.len(),
        sent,
        "a malformed code sent a request"
    );
    p.host
        .http_responses
        .push_back(pi_answer(true, "matching 1 tokens"));
    assert_eq!(outcome(&mut p, "1234-5678"), "accepted");

    // The secret stays the host's: every request named it, none carried a value of the plugin's.
    for request in &p.host.http_requests {
        assert!(
            request
                .headers
                .iter()
                .all(|(name, value)| name == "authorization"
                    && matches!(value, SecretRef::Secret(s) if s == "pi-credential")),
            "{:?}",
            request.headers
        );
        let HttpBody::Form(fields) = &request.body else {
            panic!("not a form")
        };
        literal(fields);
    }
}

#[test]
fn privacyidea_names_the_user_and_the_credential_as_configured() {
    let mut p = load("privacyidea.wasm", &[Grant::Http]);
    let sent_user = |p: &mut Plugin, config: &[(&str, &str)]| -> Vec<(String, String)> {
        p.host.config.clear();
        p.host.config.insert(
            "validate_url".into(),
            "https://pi.example/validate/check".into(),
        );
        for (k, v) in config {
            p.host.config.insert((*k).into(), (*v).into());
        }
        p.host
            .http_responses
            .push_back(pi_answer(true, "matching 1 tokens"));
        assert_eq!(outcome(p, "123456"), "accepted", "{config:?}");
        let request = p.host.http_requests.last().unwrap();
        let HttpBody::Form(fields) = &request.body else {
            panic!("not a form")
        };
        let mut seen: Vec<(String, String)> = fields
            .iter()
            .filter(|(k, _)| k != "pass")
            .map(|(k, v)| match v {
                SecretRef::Literal(v) => (k.clone(), v.clone()),
                SecretRef::Secret(name) => panic!("{k} carries the secret {name}"),
            })
            .collect();
        for (name, value) in &request.headers {
            let SecretRef::Secret(secret) = value else {
                panic!("{name}: a literal")
            };
            seen.push((name.clone(), format!("secret {secret}")));
        }
        seen
    };
    let pairs = |v: &[(&str, &str)]| -> Vec<(String, String)> {
        v.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    };
    assert_eq!(
        sent_user(&mut p, &[]),
        pairs(&[
            ("user", "ana@example.com"),
            ("authorization", "secret pi-credential")
        ])
    );
    assert_eq!(
        sent_user(&mut p, &[("user_name", "local_part"), ("realm", "staff")]),
        pairs(&[
            ("user", "ana"),
            ("realm", "staff"),
            ("authorization", "secret pi-credential")
        ])
    );
    assert_eq!(
        sent_user(&mut p, &[("user_name", "id"), ("secret", "pi-validate")]),
        pairs(&[("user", "u-1"), ("authorization", "secret pi-validate")])
    );
    // No credential: for a privacyIDEA whose /validate/check is open.
    assert_eq!(
        sent_user(&mut p, &[("user_name", "email"), ("secret", "")]),
        pairs(&[("user", "ana@example.com")])
    );

    // Config it does not understand fails closed, before any request.
    let sent = p.host.http_requests.len();
    p.host.config.insert("user_name".into(), "name".into());
    assert!(outcome(&mut p, "123456").starts_with("internal: user_name \"name\""));
    p.host.config.clear();
    assert!(outcome(&mut p, "123456").starts_with("internal: no validate_url"));
    assert_eq!(p.host.http_requests.len(), sent);
}
