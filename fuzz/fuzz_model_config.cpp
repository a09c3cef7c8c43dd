// libFuzzer target: see model_config_input in fuzz_inputs.hpp. A refusal (tensorpar::Error) is a pass.
#include "fuzz_inputs.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    tensorpar::fuzz::model_config_input({reinterpret_cast<const char*>(data), size});
  } catch (const tensorpar::Error&) {
  }
  return 0;
}
