#include "gradwatch/reporter/channel.h"

#include <grpcpp/security/credentials.h>

#include <cstdlib>
#include <stdexcept>

#include "gradwatch/common/file.h"

namespace gradwatch::reporter {

TlsFiles TlsFromEnv() {
  auto env = [](const char* name) {
    const char* v = std::getenv(name);
    return std::string(v ? v : "");
  };
  return {env("GRADWATCH_TLS_CA"), env("GRADWATCH_TLS_CERT"), env("GRADWATCH_TLS_KEY")};
}

std::shared_ptr<grpc::ChannelCredentials> ChannelCredentials(const TlsFiles& tls) {
  if (!tls.enabled()) return grpc::InsecureChannelCredentials();
  if (tls.cert.empty() != tls.key.empty()) {
    throw std::runtime_error("TLS: a client certificate needs its key and a key its certificate "
                             "(--tls-cert with --tls-key, or GRADWATCH_TLS_CERT with GRADWATCH_TLS_KEY)");
  }
  grpc::SslCredentialsOptions options;
  if (!tls.ca.empty()) options.pem_root_certs = ReadFileOrThrow(tls.ca, "TLS CA");
  if (!tls.cert.empty()) {
    options.pem_cert_chain = ReadFileOrThrow(tls.cert, "TLS client certificate");
    options.pem_private_key = ReadFileOrThrow(tls.key, "TLS client key");
  }
  return grpc::SslCredentials(options);
}

}  // namespace gradwatch::reporter
