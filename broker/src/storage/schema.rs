//! Owns the diesel table definitions shared by both backends (types valid on SQLite and PostgreSQL).

diesel::table! {
    users (id) {
        id -> Text,
        email -> Text,
        name -> Text,
        password_hash -> Nullable<Text>,
        disabled -> Bool,
        created_at -> BigInt,
        updated_at -> BigInt,
        tokens_valid_after -> BigInt,
    }
}

diesel::table! {
    sessions (id_hash) {
        id_hash -> Binary,
        user_id -> Text,
        channel -> Text,
        user_agent -> Text,
        ip -> Text,
        upstream -> Text,
        amr -> Text,
        auth_time -> BigInt,
        last_seen -> BigInt,
        idle_timeout -> BigInt,
        expires_at -> BigInt,
        sid -> Text,
        upstream_acr -> Nullable<Text>,
    }
}

diesel::table! {
    secrets (name) {
        name -> Text,
        value -> Binary,
        created_at -> BigInt,
    }
}

diesel::table! {
    clients (id) {
        id -> Text,
        config -> Text,
        created_at -> BigInt,
    }
}

diesel::table! {
    signing_keys (kid) {
        kid -> Text,
        alg -> Text,
        private_key_enc -> Binary,
        public_jwk -> Text,
        created_at -> BigInt,
        active_at -> BigInt,
        retired_at -> Nullable<BigInt>,
    }
}

diesel::table! {
    auth_codes (code_hash) {
        code_hash -> Binary,
        client_id -> Text,
        redirect_uri -> Text,
        user_id -> Text,
        sid -> Text,
        scope -> Text,
        nonce -> Nullable<Text>,
        code_challenge -> Text,
        auth_time -> BigInt,
        acr -> Nullable<Text>,
        amr -> Text,
        expires_at -> BigInt,
        consumed_at -> Nullable<BigInt>,
    }
}

diesel::table! {
    refresh_tokens (token_hash) {
        token_hash -> Binary,
        family_id -> Text,
        client_id -> Text,
        user_id -> Text,
        sid -> Text,
        scope -> Text,
        auth_time -> BigInt,
        acr -> Nullable<Text>,
        amr -> Text,
        created_at -> BigInt,
        idle_expires_at -> BigInt,
        expires_at -> BigInt,
        used_at_ms -> Nullable<BigInt>,
    }
}

diesel::table! {
    revoked_tokens (jti) {
        jti -> Text,
        expires_at -> BigInt,
    }
}

diesel::table! {
    session_clients (sid, client_id) {
        sid -> Text,
        client_id -> Text,
    }
}

diesel::table! {
    logout_deliveries (id) {
        id -> Text,
        client_id -> Text,
        uri -> Text,
        sub -> Text,
        sid -> Text,
        attempts -> BigInt,
        next_attempt_at -> BigInt,
        created_at -> BigInt,
    }
}

diesel::joinable!(sessions -> users (user_id));
diesel::allow_tables_to_appear_in_same_query!(
    users,
    sessions,
    secrets,
    clients,
    signing_keys,
    auth_codes,
    refresh_tokens,
    revoked_tokens,
    session_clients,
    logout_deliveries
);

diesel::table! {
    audit_events (id) {
        id -> BigInt,
        at -> BigInt,
        kind -> Text,
        user_id -> Nullable<Text>,
        client_id -> Nullable<Text>,
        sid -> Nullable<Text>,
        ip -> Nullable<Text>,
        upstream -> Nullable<Text>,
        reason -> Nullable<Text>,
    }
}

diesel::table! {
    login_failures (account) {
        account -> Text,
        failures -> BigInt,
        last_failure_at -> BigInt,
        locked_until -> BigInt,
    }
}

diesel::table! {
    upstream_links (upstream, subject) {
        upstream -> Text,
        subject -> Text,
        user_id -> Text,
        created_at -> BigInt,
        groups -> Text,
        verified_email -> Nullable<Text>,
        kept_claims -> Text,
    }
}

diesel::table! {
    upstream_requests (state_hash) {
        state_hash -> Binary,
        upstream -> Text,
        binding_hash -> Binary,
        journey_hash -> Binary,
        pending -> Text,
        expires_at -> BigInt,
    }
}

diesel::table! {
    logout_continuations (relay_hash) {
        relay_hash -> Binary,
        upstream -> Text,
        request_id -> Text,
        then_url -> Text,
        expires_at -> BigInt,
    }
}

diesel::table! {
    mfa_state (plugin_id, user_id) {
        plugin_id -> Text,
        user_id -> Text,
        version -> BigInt,
        data -> Binary,
        updated_at -> BigInt,
    }
}

diesel::table! {
    mfa_enrollments (user_id, plugin_id) {
        user_id -> Text,
        plugin_id -> Text,
        created_at -> BigInt,
        last_used_at -> Nullable<BigInt>,
    }
}

diesel::table! {
    mfa_recovery_codes (user_id, code_hash) {
        user_id -> Text,
        code_hash -> Binary,
        created_at -> BigInt,
        used_at -> Nullable<BigInt>,
    }
}

diesel::table! {
    control_signals (name) {
        name -> Text,
        generation -> BigInt,
        updated_at -> BigInt,
    }
}

diesel::table! {
    saml_assertions (upstream, assertion_id) {
        upstream -> Text,
        assertion_id -> Text,
        expires_at -> BigInt,
    }
}

diesel::table! {
    upstream_sessions (sid) {
        sid -> Text,
        upstream -> Text,
        id_token -> Nullable<Text>,
        name_id -> Nullable<Text>,
        name_id_format -> Nullable<Text>,
        session_index -> Nullable<Text>,
        created_at -> BigInt,
    }
}

diesel::table! {
    login_transactions (id_hash) {
        id_hash -> Binary,
        version -> BigInt,
        state -> Text,
        created_at -> BigInt,
        updated_at -> BigInt,
        expires_at -> BigInt,
        finished_at -> Nullable<BigInt>,
        binding_hash -> Nullable<Binary>,
    }
}

diesel::table! {
    webauthn_credentials (credential_id) {
        credential_id -> Binary,
        user_id -> Text,
        passkey -> Text,
        name -> Text,
        created_at -> BigInt,
        last_used_at -> Nullable<BigInt>,
        sign_count -> BigInt,
        backup_eligible -> Bool,
        backup_state -> Bool,
        attested_aaguid -> Nullable<Text>,
        authenticator -> Nullable<Text>,
    }
}

diesel::table! {
    saml_apps (entity_id) {
        entity_id -> Text,
        config -> Text,
        metadata -> Text,
        metadata_url -> Nullable<Text>,
        fetched_at -> BigInt,
        created_at -> BigInt,
    }
}
