//! Owns the client_credentials grant: an access token for the client itself.

use super::{OAuthError, Provider, TokenResponse};
use crate::audit::{Event, EventKind};
use crate::domain::client::{Client, Grant};
use serde_json::json;

impl Provider {
    /// `grant_type=client_credentials`: an access token for the client itself.
    pub fn client_credentials(
        &self,
        client: &Client,
        scope: Option<&str>,
    ) -> Result<TokenResponse, OAuthError> {
        if !client.allows(Grant::ClientCredentials) || client.is_public() {
            return Err(OAuthError::UnauthorizedClient(
                "grant not allowed for this client".into(),
            ));
        }
        let scope = match scope {
            Some(s) => {
                let asked: Vec<&str> = s.split_whitespace().collect();
                if let Some(bad) = asked
                    .iter()
                    .find(|a| !client.scopes.iter().any(|c| c == *a))
                {
                    return Err(OAuthError::InvalidScope(format!(
                        "`{bad}` is not allowed for this client"
                    )));
                }
                asked.join(" ")
            }
            None => String::new(),
        };
        let now = self.now();
        let ttl = self.access_ttl(client);
        let claims = json!({
            "iss": self.settings.issuer,
            "sub": client.id,
            "aud": client.audience.clone().unwrap_or_else(|| client.id.clone()),
            "exp": now + ttl,
            "iat": now,
            "jti": self.random_token(),
            "client_id": client.id,
            "scope": scope,
        });
        let access_token = self.sign_for(client, "at+jwt", &claims)?;
        self.audit.record(
            Event::new(EventKind::TokenIssued)
                .client(client.id.as_str())
                .reason("client_credentials"),
        );
        Ok(TokenResponse {
            access_token,
            token_type: "Bearer",
            expires_in: ttl,
            scope,
            id_token: None,
            refresh_token: None,
        })
    }
}
