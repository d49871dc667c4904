# ctest bench.detection: generate the traces (once) with make_traces.sh, then score them.
# cmake -DTRAIN=gradwatch-train -DBENCH=detection_bench -DSCRIPT=make_traces.sh -DTRACES=dir
#       -P run_bench.cmake
foreach(var TRAIN BENCH SCRIPT TRACES)
  if(NOT DEFINED ${var})
    message(FATAL_ERROR "run_bench.cmake: -D${var}=... is required")
  endif()
endforeach()
set(ENV{GRADWATCH_TRAIN} "${TRAIN}")
execute_process(COMMAND bash "${SCRIPT}" "${TRACES}" RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "make_traces.sh failed (${rc})")
endif()
execute_process(COMMAND "${BENCH}" "${TRACES}" RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "detection_bench failed (${rc})")
endif()
