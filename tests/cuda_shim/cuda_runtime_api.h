#pragma once
// Syntax-check shim: see cuda.h.
#include "cuda.h"
