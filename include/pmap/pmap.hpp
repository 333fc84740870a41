// pmap/pmap.hpp — the umbrella header of persistent-map: everything public.
#pragma once

#include "pmap/backend.hpp"
#include "pmap/backends/csv.hpp"
#include "pmap/backends/memory.hpp"
#include "pmap/backends/sqlite.hpp"
#include "pmap/codec.hpp"
#include "pmap/error.hpp"
#include "pmap/future.hpp"
#include "pmap/options.hpp"
#include "pmap/persistent_map.hpp"
#include "pmap/watch.hpp"
