# Concatenates the SQL parts (PARTS, a list) into OUT.
file(WRITE ${OUT} "")
foreach(part IN LISTS PARTS)
  file(READ ${part} text)
  get_filename_component(name ${part} NAME)
  file(APPEND ${OUT} "-- ---- ${name} ----\n${text}\n")
endforeach()
