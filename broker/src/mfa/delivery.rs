//! Owns sending what plugins asked to send: email through lettre to the configured SMTP server,
//! text messages through the configured HTTP SMS gateway. Credentials stay here.

use std::sync::Arc;
use std::time::Duration;

use lettre::message::{
    Mailbox,
    header::{ContentType, MIME_VERSION_1_0},
};
use lettre::transport::smtp::PoolConfig;
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use super::host::Outgoing;
use crate::clock::Entropy;
use crate::config::mfa::{SmsSettings, SmtpSettings, SmtpTls};
use crate::domain::PhoneNumber;

#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error("no SMTP server is configured ([mfa.smtp])")]
    NoSmtp,
    #[error("no SMS gateway is configured ([mfa.sms])")]
    NoSms,
    #[error("the user has no usable email address")]
    BadRecipient,
    #[error("email not sent: {0}")]
    Smtp(String),
    #[error("text message not sent: {0}")]
    Sms(String),
}

/// Sends plugin messages. Cheap to clone.
#[derive(Clone)]
pub struct Delivery {
    /// The transport, the sender, and the bound on one whole send.
    smtp: Option<(AsyncSmtpTransport<Tokio1Executor>, Mailbox, Duration)>,
    sms: Option<(SmsSettings, reqwest::Client)>,
    /// For the `Message-ID` of each email.
    entropy: Arc<dyn Entropy>,
}

impl Delivery {
    pub fn new(
        smtp: Option<&SmtpSettings>,
        sms: Option<&SmsSettings>,
        entropy: Arc<dyn Entropy>,
    ) -> Result<Self, DeliveryError> {
        let smtp = match smtp {
            None => None,
            Some(s) => {
                let builder = match s.tls {
                    SmtpTls::None => {
                        AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(s.host.as_str())
                    }
                    SmtpTls::StartTls => {
                        AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&s.host)
                            .map_err(|e| DeliveryError::Smtp(e.to_string()))?
                    }
                    SmtpTls::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(&s.host)
                        .map_err(|e| DeliveryError::Smtp(e.to_string()))?,
                };
                // `timeout` bounds the connect here and the whole send in `email`. No pooled
                // connections: a send cut at its deadline drops its connection mid-command, and
                // lettre would park it for the next send.
                let mut builder = builder
                    .port(s.port)
                    .timeout(Some(s.timeout))
                    .pool_config(PoolConfig::new().max_size(0));
                if let Some((user, pass)) = &s.credentials {
                    builder =
                        builder.credentials(Credentials::new(user.clone(), pass.expose().into()));
                }
                let from: Mailbox = s
                    .from
                    .parse()
                    .map_err(|_| DeliveryError::Smtp("from is not a mailbox".into()))?;
                Some((builder.build(), from, s.timeout))
            }
        };
        let sms = match sms {
            None => None,
            Some(s) => {
                let client = reqwest::Client::builder()
                    .timeout(s.timeout)
                    .redirect(reqwest::redirect::Policy::none())
                    .build()
                    .map_err(|e| DeliveryError::Sms(e.to_string()))?;
                Some((s.clone(), client))
            }
        };
        Ok(Self { smtp, sms, entropy })
    }

    pub fn can_email(&self) -> bool {
        self.smtp.is_some()
    }

    pub fn can_sms(&self) -> bool {
        self.sms.is_some()
    }

    /// Sends every message, in order; stops at the first failure.
    pub async fn send_all(
        &self,
        email_to: &str,
        outbox: Vec<Outgoing>,
    ) -> Result<(), DeliveryError> {
        for m in outbox {
            match m {
                Outgoing::Email { subject, body } => self.email(email_to, subject, body).await?,
                Outgoing::Sms { to, body } => self.sms(&to, body).await?,
            }
        }
        Ok(())
    }

    async fn email(&self, to: &str, subject: String, body: String) -> Result<(), DeliveryError> {
        let (transport, from, deadline) = self.smtp.as_ref().ok_or(DeliveryError::NoSmtp)?;
        let to: Mailbox = to.parse().map_err(|_| DeliveryError::BadRecipient)?;
        let message = Message::builder()
            // RFC 2045 4: a MIME message (it has Content-Type) MUST say MIME-Version.
            .header(MIME_VERSION_1_0)
            .message_id(Some(message_id(self.entropy.as_ref(), from)))
            .from(from.clone())
            .to(to)
            .subject(subject)
            .header(ContentType::TEXT_PLAIN)
            .body(body)
            .map_err(|e| DeliveryError::Smtp(e.to_string()))?;
        // lettre bounds only the connect; a server that accepts and then never answers would
        // hold the request for the kernel's TCP timeouts. The whole exchange gets the deadline.
        match tokio::time::timeout(*deadline, transport.send(message)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(DeliveryError::Smtp(e.to_string())),
            Err(_) => Err(DeliveryError::Smtp(format!(
                "no answer from the SMTP server within {deadline:?}"
            ))),
        }
    }

    async fn sms(&self, to: &PhoneNumber, body: String) -> Result<(), DeliveryError> {
        let (settings, client) = self.sms.as_ref().ok_or(DeliveryError::NoSms)?;
        let payload = serde_json::json!({ "to": to.as_str(), "body": body }).to_string();
        let mut req = client
            .post(settings.url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(payload);
        if let Some(token) = &settings.token {
            req = req.bearer_auth(token.expose());
        }
        // The client's timeout covers connect, request and response headers; the body is never
        // read. The outer bound is the same deadline, for a gateway that trickles.
        let res = match tokio::time::timeout(settings.timeout, req.send()).await {
            Ok(r) => r.map_err(|e| DeliveryError::Sms(e.without_url().to_string()))?,
            Err(_) => {
                return Err(DeliveryError::Sms(format!(
                    "no answer from the gateway within {:?}",
                    settings.timeout
                )));
            }
        };
        if !res.status().is_success() {
            return Err(DeliveryError::Sms(format!(
                "gateway answered {}",
                res.status()
            )));
        }
        Ok(())
    }
}

/// An RFC 5322 3.6.4 `Message-ID`: 128 random bits at the sender's domain.
fn message_id(entropy: &dyn Entropy, from: &Mailbox) -> String {
    let mut id = [0u8; 16];
    entropy.fill(&mut id);
    format!("<{}@{}>", hex::encode(id), from.email.domain())
}

#[cfg(test)]
mod tests {
    use super::message_id;

    #[test]
    fn message_ids_are_unique_at_the_sender_domain() {
        let from: lettre::message::Mailbox = "Concierge <no-reply@id.example.com>".parse().unwrap();
        let a = message_id(&crate::clock::OsEntropy, &from);
        let b = message_id(&crate::clock::OsEntropy, &from);
        assert!(a.starts_with('<') && a.ends_with("@id.example.com>"), "{a}");
        assert_eq!(a.len(), "<@id.example.com>".len() + 32);
        assert_ne!(a, b);
    }
}
