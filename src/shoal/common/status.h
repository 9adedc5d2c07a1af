// Internal spelling of the public Status (include/shoal/status.hpp), so that internal code
// includes its own layer's header.
#pragma once

#include "shoal/status.hpp"
