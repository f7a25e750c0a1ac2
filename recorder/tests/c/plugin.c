/* A library found only through its loader's RUNPATH ($ORIGIN/lib). */
int plugin_answer(void) { return 42; }
