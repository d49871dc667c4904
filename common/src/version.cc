#include "gradwatch/common/version.h"

namespace gradwatch {

const char* Version() { return GRADWATCH_VERSION; }

}  // namespace gradwatch
