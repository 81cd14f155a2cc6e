/* The libxmlsec1 declarations `build.rs` binds with bindgen (allow-listed there): signing with
 * a key loaded once (`SigningKey`, `sign_with` in src/lib.rs). `xmlSecDSigCtx` is bound for its
 * layout (the `signKey` field is set directly, as xmlsec's own examples do). */
#include <xmlsec/xmlsec.h>
#include <xmlsec/keys.h>
#include <xmlsec/xmldsig.h>
#include <xmlsec/xmltree.h>
#include <xmlsec/openssl/app.h>
