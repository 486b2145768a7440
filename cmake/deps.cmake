# Finds the system libraries crouter builds on, naming the Debian package
# when one is missing. scripts/install-deps.sh installs all of them.
find_package(PkgConfig REQUIRED)
find_package(Threads REQUIRED)

function(cr_require_pkg var module debian_pkg)
  pkg_check_modules(${var} IMPORTED_TARGET ${module})
  if(NOT ${var}_FOUND)
    message(FATAL_ERROR "${module} not found: apt-get install ${debian_pkg} (or run scripts/install-deps.sh)")
  endif()
endfunction()

cr_require_pkg(JANSSON jansson libjansson-dev)
cr_require_pkg(YAML yaml-0.1 libyaml-dev)
cr_require_pkg(MHD libmicrohttpd libmicrohttpd-dev)
cr_require_pkg(CURL libcurl libcurl4-openssl-dev)
# RCU flavour: membarrier (no per-read fences, no signals, no quiescent-state
# calls needed on the workers).
cr_require_pkg(URCU liburcu-memb liburcu-dev)
cr_require_pkg(URCU_CDS liburcu-cds liburcu-dev)
cr_require_pkg(OPENSSL openssl libssl-dev)
cr_require_pkg(NATS libnats libnats-dev)

if(CROUTER_TESTS)
  cr_require_pkg(CMOCKA cmocka libcmocka-dev)
endif()
