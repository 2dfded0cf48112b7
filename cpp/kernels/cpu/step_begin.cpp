// step_begin, CPU (the body is in the shared header).
#include "egsde/ops/step_begin.h"

namespace egsde::cpu {

void step_begin(const StepBeginParams& p) { step_begin_body(p); }

}  // namespace egsde::cpu
