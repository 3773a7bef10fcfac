# Run-time files of the LumbarSeg module that live outside this folder, as paths
# relative to LUMBARSEG_ROOT (the repository root):
#   LUMBARSEG_LIB_SCRIPTS - every LumbarSegLib/**/*.py
#   LUMBARSEG_RESOURCES   - model weights, the .ui, icons and the terminology context
# Globbed, so modules and weights added later are packaged without editing a list.
# Testing/test_packaging.py evaluates this same file with "cmake -P".

if(NOT DEFINED LUMBARSEG_ROOT)
  message(FATAL_ERROR "Set LUMBARSEG_ROOT to the repository root before including LumbarSegFiles.cmake")
endif()

set(_lumbarseg_glob_options RELATIVE "${LUMBARSEG_ROOT}")
if(NOT CMAKE_SCRIPT_MODE_FILE)
  # Re-glob at build time so that new files are picked up without re-running cmake by hand.
  list(APPEND _lumbarseg_glob_options CONFIGURE_DEPENDS)
endif()

file(GLOB_RECURSE LUMBARSEG_LIB_SCRIPTS ${_lumbarseg_glob_options}
  "${LUMBARSEG_ROOT}/LumbarSegLib/*.py"
  )
file(GLOB_RECURSE LUMBARSEG_RESOURCES ${_lumbarseg_glob_options}
  "${LUMBARSEG_ROOT}/Resources/Models/*"
  "${LUMBARSEG_ROOT}/Resources/UI/*.ui"
  "${LUMBARSEG_ROOT}/Resources/Icons/*.png"
  "${LUMBARSEG_ROOT}/Resources/Terminology/*.term.json"
  )

# Hidden files (.gitkeep, editor files) and Python caches are not run-time files.
foreach(_lumbarseg_list LUMBARSEG_LIB_SCRIPTS LUMBARSEG_RESOURCES)
  list(FILTER ${_lumbarseg_list} EXCLUDE REGEX "(^|/)(\\.[^/]*|__pycache__)(/|$)")
  list(SORT ${_lumbarseg_list})
endforeach()
