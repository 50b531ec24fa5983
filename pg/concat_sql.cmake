# Concatenates the SQL parts (PARTS, separated by |) into OUT.
string(REPLACE "|" ";" parts "${PARTS}")
file(WRITE ${OUT} "")
foreach(part IN LISTS parts)
  file(READ ${part} text)
  get_filename_component(name ${part} NAME)
  file(APPEND ${OUT} "-- ---- ${name} ----\n${text}\n")
endforeach()
