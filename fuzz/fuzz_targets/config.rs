//! Fuzzes the configuration parser with arbitrary text: it must return a config or an error
//! naming the file, never panic, and a parsed config must survive its own `/config` dump.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meshprobe::config::Config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Config::parse(text, "fuzz.yml") {
        Ok(config) => {
            let dumped = config.to_yaml();
            let reparsed = Config::parse(&dumped, "dump.yml");
            assert_eq!(reparsed.as_ref().ok(), Some(&config), "dump did not round-trip: {dumped}");
        }
        Err(error) => assert_eq!(error.file, "fuzz.yml"),
    }
});
