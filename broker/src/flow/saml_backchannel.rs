//! Owns which SAML SPs a session that ends is told of by back channel, and how: the provider's
//! logout outbox ([`OtherParties`]) asks here for each SAML party of the session (`saml:<entity
//! id>`). An SP with a SOAP SingleLogoutService (`slo_soap_url`) is told there when the session
//! ends with no browser to carry a LogoutRequest (a revocation, a session limit, another
//! session's LogoutRequest), or in a browser when it has no front channel (`slo_url`); an SP with
//! a front channel is the browser's sign-out chain's (`saml_slo_out`). Each attempt is a fresh
//! signed LogoutRequest (`saml_idp::backchannel`); an SP's answer that is refused, or not Success,
//! is on the audit trail as at the front channel, and not retried.

use std::sync::Arc;

use crate::audit::{Auditor, Event, EventKind};
use crate::domain::UserId;
use crate::provider::logout::{DeliveryFailure, Ending, OtherParties, PartyMessage};
use crate::saml_idp::SamlIdp;
use crate::saml_idp::backchannel::{SOAP_ACTION, SOAP_CONTENT_TYPE};
use crate::storage::LogoutDelivery;

/// The party key of a SAML SP in a session's parties.
const SAML_PARTY: &str = "saml:";

/// The SAML SPs as parties of the logout outbox.
pub struct SamlParties {
    saml: Arc<SamlIdp>,
    audit: Arc<Auditor>,
}

impl SamlParties {
    pub fn new(saml: Arc<SamlIdp>, audit: Arc<Auditor>) -> Self {
        Self { saml, audit }
    }

    fn app(&self, party: &str) -> Option<Arc<crate::config::saml_apps::SamlApp>> {
        let entity_id = party.strip_prefix(SAML_PARTY)?;
        match self.saml.app(entity_id) {
            Ok(app) => app,
            Err(e) => {
                tracing::warn!(sp = %entity_id, error = %e, "SAML SP not read");
                None
            }
        }
    }
}

impl OtherParties for SamlParties {
    fn owns(&self, party: &str) -> bool {
        party.starts_with(SAML_PARTY)
    }

    fn back_channel(&self, party: &str, ending: &Ending) -> Option<String> {
        if matches!(ending, Ending::RequestedBy(asker) if asker == party) {
            return None;
        }
        let app = self.app(party)?;
        if *ending == Ending::Browser && app.slo_url.is_some() {
            return None;
        }
        app.slo_soap_url.as_ref().map(ToString::to_string)
    }

    fn message(&self, d: &LogoutDelivery) -> Result<Option<PartyMessage>, String> {
        let Some(app) = self.app(&d.client_id) else {
            return Ok(None);
        };
        let user = self
            .saml
            .store
            .user_by_id(&UserId::from_stored(d.sub.clone()))
            .map_err(|e| e.to_string())?;
        let Some(user) = user else {
            return Ok(None);
        };
        let (format, name_id) = self
            .saml
            .name_id_for(&app, user.id.as_str(), user.email.as_str(), &d.sid)
            .map_err(|e| e.to_string())?;
        let (body, request_id) = self
            .saml
            .soap_logout_request(&app, format, &name_id, &d.sid)
            .map_err(|e| e.to_string())?;
        Ok(Some(PartyMessage {
            content_type: SOAP_CONTENT_TYPE,
            headers: vec![("SOAPAction", SOAP_ACTION)],
            body,
            answers: request_id,
        }))
    }

    fn answered(
        &self,
        d: &LogoutDelivery,
        sent: &PartyMessage,
        status: u16,
        body: &str,
    ) -> Result<(), DeliveryFailure> {
        // A SOAP Fault comes with a 500, and any other error status: the SP may do better later.
        if status != 200 {
            return Err(DeliveryFailure::Retry(format!("status {status}")));
        }
        let Some(app) = self.app(&d.client_id) else {
            return Ok(());
        };
        let entity_id = app.entity_id.as_str();
        match self.saml.soap_logout_response(&app, body, &sent.answers) {
            Ok(()) => {
                tracing::info!(sp = %entity_id, sid = %d.sid, "signed out at the SAML SP by back channel");
                Ok(())
            }
            Err(e) => {
                tracing::warn!(sp = %entity_id, reason = %e, "SAML SOAP LogoutResponse refused");
                self.audit.record(
                    Event::new(EventKind::LoginFailed)
                        .user(d.sub.as_str())
                        .sid(d.sid.as_str())
                        .client(entity_id)
                        .reason(format!("saml_logout_response_refused:{}", e.check())),
                );
                Err(DeliveryFailure::Refused(e.to_string()))
            }
        }
    }
}
