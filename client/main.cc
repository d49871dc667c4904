// gradwatch: the command-line client of gradwatchd.
#include <iostream>

#include "gradwatch/cli/cli.h"

int main(int argc, char** argv) { return gradwatch::cli::RunCli(argc, argv, std::cout, std::cerr); }
