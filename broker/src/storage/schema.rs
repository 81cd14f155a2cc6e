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
    }
}

diesel::table! {
    secrets (name) {
        name -> Text,
        value -> Binary,
        created_at -> BigInt,
    }
}

diesel::joinable!(sessions -> users (user_id));
diesel::allow_tables_to_appear_in_same_query!(users, sessions, secrets);
