// How gradwatch's clients (the trainer's reporter, the CLI) reach gradwatchd: plain, or
// TLS with the monitor's CA and, when the monitor asks for one, a client certificate.
// The target's host (e.g. 127.0.0.1 or monitor.example) must be in the server
// certificate's subjectAltName.
#pragma once

#include <grpcpp/security/credentials.h>

#include <memory>
#include <string>

namespace gradwatch::reporter {

struct TlsFiles {
  std::string ca;    // PEM CA (or the self-signed server certificate) to trust; "" = plain
  std::string cert;  // PEM client certificate chain, for a monitor that requires one
  std::string key;   // its PEM private key
  bool enabled() const { return !ca.empty() || !cert.empty(); }
};

// GRADWATCH_TLS_CA, GRADWATCH_TLS_CERT and GRADWATCH_TLS_KEY, each "" when unset.
TlsFiles TlsFromEnv();

// Insecure credentials when `tls` is not enabled. Throws std::runtime_error naming a file
// that cannot be read, or a certificate given without its key.
std::shared_ptr<grpc::ChannelCredentials> ChannelCredentials(const TlsFiles& tls);

}  // namespace gradwatch::reporter
